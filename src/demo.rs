//! demo: realistic synthetic customer messages — the demo's traffic (`moodstream
//! demo-produce`) and the benchmark's input. Calm multi-channel background traffic, one
//! customer getting angrier turn by turn, and a surge of negative messages on one channel; or,
//! with `--rate`, steady calm traffic for soak tests (`scripts/soak.sh`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};

use crate::config::{Client, DemoProduceConfig, Format};
use crate::message::CustomerMessage;
use crate::pipeline::post::now_ms;
use crate::schema::{contract, contracts, encode_avro};

/// A small deterministic PRNG (xorshift64*): reproducible traffic without another dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

const NEUTRAL: &[&str] = &[
    "Hi, can you tell me when order {order} will be delivered?",
    "What are your opening hours on weekends?",
    "I would like to change the shipping address for my order {order}.",
    "Do you ship to Canada, and how long does it usually take?",
    "Please send me a copy of the invoice for order {order}.",
    "How do I update the email address on my account?",
];
const CONFUSED: &[&str] = &[
    "I don't understand the charges on my bill, what is this fee for?",
    "I'm confused, the app says my refund was issued but I can't see it anywhere.",
    "Which plan am I on? The website and the email say different things.",
];
const ANXIOUS: &[&str] = &[
    "I'm worried my card was charged twice, can someone check please?",
    "I'm nervous the package won't arrive before my daughter's birthday on Saturday.",
    "Is my account safe? I got a strange login alert this morning.",
];
const FRUSTRATED: &[&str] = &[
    "I've reset my password three times and I still can't log in. This is annoying.",
    "Still waiting on a reply about my return, it's been a week.",
    "Your tracking page hasn't updated in five days, this is getting really annoying.",
];
const DISAPPOINTED: &[&str] = &[
    "The blender arrived broken. Really disappointed, it was a gift.",
    "Sadly the jacket doesn't fit and the quality is not what I expected.",
    "I'm disappointed, the replacement has the same defect as the first one.",
];
const ANGRY: &[&str] = &[
    "This is outrageous! You charged me twice for order {order} and nobody answers!",
    "I am furious. Third time I'm contacting you and still no refund. Absolutely disgusting service.",
    "Unacceptable. Cancel my account right now, I'm done with this garbage company.",
];
const GRATEFUL: &[&str] = &[
    "Thank you so much for the quick refund, really appreciate it!",
    "Thanks for your help yesterday, the issue is solved.",
];
const SATISFIED: &[&str] = &[
    "Love the new headphones, great sound and fast delivery!",
    "Everything arrived on time and works perfectly. Great job!",
];
/// Chinese and code-switched calm traffic: mostly neutral and positive, some negative.
const CHINESE: &[&str] = &[
    "你好，我的订单 {order} 什么时候发货？",
    "请问可以修改收货地址吗？订单号 {order}",
    "发票怎么开？需要公司抬头的。",
    "我的order {order} 还没到，帮我查一下物流",
    "谢谢你们的帮助，问题已经解决了！",
    "收到了，质量很好，物流也快，五星好评👍",
    "退款已经到账了，谢谢小姐姐",
    "这个'已揽收'是什么意思？包裹到底发出去没有？",
    "我已经等了两个星期了，包裹还没到，太让人失望了。",
    "账号在异地登录了，是不是被盗了？好担心",
];

/// The Chinese conversation that escalates, turn by turn (tenant globex, chat).
const ESCALATING_ZH: &[&str] = &[
    "你好，我的订单 {order} 说好周一到的，现在什么情况？",
    "物流三天没更新了，能不能帮忙催一下？",
    "我已经问了三次了，每次都说在处理，到底什么时候能解决？太烦了",
    "你们就是在踢皮球！我要退款，马上！",
    "垃圾平台，骗子！再不给我退款我就投诉到12315，还要去微博曝光你们！",
];

/// The angry conversation: calm question, then angrier turn by turn.
const ESCALATING: &[&str] = &[
    "Hi, my order {order} was supposed to arrive on Monday. Any update?",
    "It's Wednesday now and the tracking still hasn't moved. Annoying.",
    "I've asked twice already. This is really frustrating, nobody tells me anything.",
    "This is ridiculous. I want my money back now.",
    "I am absolutely furious! Worst service ever, I'm reporting you and cancelling everything!",
];

const CHANNELS: &[&str] = &["chat", "email", "sms", "voice", "social"];
const TENANTS: &[&str] = &["acme", "globex"];
const NAMES: &[&str] = &["Alex", "Sam", "Maria", "Wei", "Priya", "Jordan"];

fn fill(template: &str, order: &str) -> String {
    template.replace("{order}", order)
}

#[allow(clippy::too_many_arguments)] // a plain record builder for synthetic data
fn message(
    rng: &mut Rng,
    id: usize,
    conversation: String,
    customer: String,
    channel: &str,
    tenant: &str,
    text: String,
    sent_at: i64,
) -> CustomerMessage {
    // Half the Chinese messages come untagged: the worker detects their language.
    let cjk = text.chars().any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c));
    let tagged = cjk && rng.below(2) == 0;
    let mut metadata = BTreeMap::new();
    if rng.below(3) == 0 {
        metadata.insert("queue".to_string(), "tier1".to_string());
    }
    CustomerMessage {
        message_id: format!("msg-{id:06}"),
        conversation_id: conversation,
        customer_id: customer,
        tenant_id: Some(tenant.to_string()),
        channel: channel.to_string(),
        subject: (channel == "email").then(|| "Question about my order".to_string()),
        language: tagged.then(|| "zh".into()),
        customer_name: (rng.below(2) == 0).then(|| rng.pick(NAMES).to_string()),
        text,
        sent_at,
        metadata,
    }
}

/// Calm background traffic (mostly neutral/positive, some negative), spread over `span_ms`
/// of event time ending at `end_ms`.
pub fn background(rng: &mut Rng, count: usize, end_ms: i64, span_ms: i64) -> Vec<CustomerMessage> {
    (0..count)
        .map(|i| {
            let sent_at = end_ms - span_ms + (span_ms * i as i64) / count.max(1) as i64;
            calm(rng, i, 0, count / 2 + 1, sent_at)
        })
        .collect()
}

/// One calm message, in a conversation drawn from `conversations` consecutive ones starting
/// at `first_conversation`.
fn calm(
    rng: &mut Rng,
    id: usize,
    first_conversation: usize,
    conversations: usize,
    sent_at: i64,
) -> CustomerMessage {
    let pool = match rng.below(20) {
        0..=7 => NEUTRAL,
        8..=9 => CONFUSED,
        10 => ANXIOUS,
        11 => FRUSTRATED,
        12 => DISAPPOINTED,
        13..=14 => GRATEFUL,
        15..=17 => SATISFIED,
        _ => CHINESE,
    };
    let order = format!("A{}", 10_000 + rng.below(90_000));
    let text = fill(rng.pick::<&str>(pool), &order);
    let conv = first_conversation + rng.below(conversations);
    let channel = *rng.pick(CHANNELS);
    let tenant = *rng.pick(TENANTS);
    message(
        rng,
        id,
        format!("conv-{conv:05}"),
        format!("cust-{conv:05}"),
        channel,
        tenant,
        text,
        sent_at,
    )
}

/// The whole demo stream: background, then one escalating conversation in English and one in
/// Chinese, then a surge of
/// negative messages on `acme` × `social`. Event times sit inside the escalation detector's
/// default windows (late tolerance 2 min, recent window 60 s): the calm traffic is the
/// baseline 62–117 s ago, the angry conversation and the surge fall in the last 50 s.
pub fn demo_stream(seed: u64, count: usize) -> Vec<CustomerMessage> {
    let mut rng = Rng::new(seed);
    let now = now_ms();
    let mut out = background(&mut rng, count, now - 62_000, 55_000);
    // The surge scope's normal level: calm acme/social traffic in the same baseline window.
    let base = out.len();
    for i in 0..80 {
        let pool = if i % 3 == 0 { GRATEFUL } else { NEUTRAL };
        let text = fill(rng.pick::<&str>(pool), &format!("C{}", 30_000 + i));
        let sent_at = now - 117_000 + i as i64 * 680;
        out.push(message(
            &mut rng,
            base + i,
            format!("conv-calm-{i:03}"),
            format!("cust-calm-{i:03}"),
            "social",
            "acme",
            text,
            sent_at,
        ));
    }
    // The angry conversations, a turn every 8 s, in English (acme) and Chinese (globex).
    for (turns, order, id, tenant, start) in [
        (ESCALATING, "A48213", "angry", "acme", now - 50_000),
        (ESCALATING_ZH, "G77102", "angry-zh", "globex", now - 48_000),
    ] {
        let base = out.len();
        for (turn, t) in turns.iter().enumerate() {
            out.push(message(
                &mut rng,
                base + turn,
                format!("conv-{id}"),
                format!("cust-{id}"),
                "chat",
                tenant,
                fill(t, order),
                start + turn as i64 * 8_000,
            ));
        }
    }
    let base = out.len();
    for i in 0..40 {
        let pool = if i % 2 == 0 { ANGRY } else { FRUSTRATED };
        let text = fill(rng.pick::<&str>(pool), &format!("B{}", 20_000 + i));
        let sent_at = now - 20_000 + i as i64 * 400;
        out.push(message(
            &mut rng,
            base + i,
            format!("conv-surge-{i:03}"),
            format!("cust-surge-{i:03}"),
            "social",
            "acme",
            text,
            sent_at,
        ));
    }
    out
}

/// Texts with a realistic customer-message length mix (≈5–120 tokens, long tail).
pub fn realistic_texts(rng: &mut Rng, n: usize) -> Vec<String> {
    let pools: [&[&str]; 8] = [
        NEUTRAL,
        CONFUSED,
        ANXIOUS,
        FRUSTRATED,
        DISAPPOINTED,
        ANGRY,
        GRATEFUL,
        SATISFIED,
    ];
    (0..n)
        .map(|_| {
            // Mostly one or two sentences, sometimes an email-length rant.
            let sentences = match rng.below(100) {
                0..=54 => 1,
                55..=84 => 2,
                85..=94 => 3 + rng.below(2),
                _ => 5 + rng.below(5),
            };
            let mut text = String::new();
            for _ in 0..sentences {
                let pool = pools[rng.below(pools.len())];
                if !text.is_empty() {
                    text.push(' ');
                }
                text.push_str(&fill(
                    rng.pick::<&str>(pool),
                    &format!("A{}", rng.below(99_999)),
                ));
            }
            if rng.below(10) == 0 {
                text = text
                    .split_whitespace()
                    .take(3)
                    .collect::<Vec<_>>()
                    .join(" ");
            }
            text
        })
        .collect()
}

/// A synthetic message around `text` (for the benchmark).
pub fn synthetic(rng: &mut Rng, id: usize, text: String) -> CustomerMessage {
    let channel = *rng.pick(CHANNELS);
    message(
        rng,
        id,
        format!("conv-{}", id % 997),
        format!("cust-{}", id % 997),
        channel,
        "acme",
        text,
        now_ms(),
    )
}

/// Produces the demo stream, or steady calm traffic when `--rate` is set.
pub async fn produce(cfg: DemoProduceConfig) -> anyhow::Result<()> {
    cfg.kafka.validate()?;
    let producer: FutureProducer = cfg
        .kafka
        .client_config(
            Client::Producer,
            &[("linger.ms", "5".to_string())],
            &[("enable.idempotence", "true".to_string())],
        )?
        .create()
        .context("creating the demo producer")?;
    let schema = contract(contracts::CUSTOMER_MESSAGE);
    if let (Some(rate), Some(secs)) = (cfg.rate, cfg.duration_secs) {
        let sent = produce_steady(&cfg, &producer, &schema, rate, secs).await?;
        producer.flush(Duration::from_secs(10))?;
        println!(
            "produced {sent} messages to {} ({rate} messages/s for {secs} s)",
            cfg.topic
        );
        return Ok(());
    }
    let mut messages = demo_stream(cfg.seed, cfg.count);
    for m in &mut messages {
        tag(m, &cfg.run_tag);
    }
    let mut deliveries = Vec::with_capacity(messages.len());
    for msg in &messages {
        deliveries.push(send(&cfg, &producer, &schema, msg)?);
    }
    for d in deliveries {
        delivered(d).await?;
    }
    producer.flush(Duration::from_secs(10))?;
    println!(
        "produced {} messages to {} ({} background, 80 calm on acme/social, 5 in each of two escalating conversations (English, Chinese), 40 in a surge on acme/social)",
        messages.len(),
        cfg.topic,
        cfg.count
    );
    Ok(())
}

/// Calm traffic at `rate` messages/s for `secs` seconds, each message stamped when it is sent.
/// Message `n` is due at `n / rate` seconds on an absolute schedule, so a slow tick (a slow
/// broker, a busy machine) is made up on the next one instead of lowering the rate. About five
/// messages per conversation, with new conversations all the time, as in live traffic.
async fn produce_steady(
    cfg: &DemoProduceConfig,
    producer: &FutureProducer,
    schema: &apache_avro::Schema,
    rate: u32,
    secs: u64,
) -> anyhow::Result<usize> {
    let total = usize::try_from(u64::from(rate) * secs).context("--rate × --duration-secs")?;
    let mut rng = Rng::new(cfg.seed);
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut sent = 0;
    while sent < total {
        tick.tick().await;
        let due = ((start.elapsed().as_secs_f64() * f64::from(rate)) as usize).min(total);
        let now = now_ms();
        let mut deliveries = Vec::with_capacity(due - sent);
        for id in sent..due {
            let mut msg = calm(&mut rng, id, id / 5, 50, now);
            tag(&mut msg, &cfg.run_tag);
            deliveries.push(send(cfg, producer, schema, &msg)?);
        }
        sent = due;
        for d in deliveries {
            delivered(d).await?;
        }
    }
    Ok(sent)
}

/// Prefixes the ids and the tenant with the run tag, so runs never share escalation state
/// (surge windows are per tenant and channel: an earlier soak's traffic would otherwise be the
/// next demo's baseline).
pub fn tag(msg: &mut CustomerMessage, run_tag: &str) {
    for id in [
        &mut msg.message_id,
        &mut msg.conversation_id,
        &mut msg.customer_id,
    ] {
        *id = format!("{run_tag}-{id}");
    }
    if let Some(tenant) = &mut msg.tenant_id {
        *tenant = format!("{run_tag}-{tenant}");
    }
}

fn send(
    cfg: &DemoProduceConfig,
    producer: &FutureProducer,
    schema: &apache_avro::Schema,
    msg: &CustomerMessage,
) -> anyhow::Result<DeliveryFuture> {
    let payload = match cfg.format {
        Format::Json => serde_json::to_vec(msg)?,
        Format::Avro => encode_avro(schema, 1, msg)?,
    };
    let record = FutureRecord::to(&cfg.topic)
        .key(&msg.conversation_id)
        .payload(&payload);
    producer
        .send_result(record)
        .map_err(|(e, _)| anyhow::anyhow!("enqueueing a demo message: {e}"))
}

async fn delivered(delivery: DeliveryFuture) -> anyhow::Result<()> {
    delivery
        .await?
        .map(|_| ())
        .map_err(|(e, _)| anyhow::anyhow!("delivering a demo message: {e}"))
}
