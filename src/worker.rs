//! worker: `moodstream run` — wires source → pipeline → sink, serves health and metrics, and
//! shuts down gracefully on SIGTERM/SIGINT: stop fetching, finish in-flight batches, deliver,
//! store and commit offsets, exit 0 within the drain timeout.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;

use crate::api::{self, Api};
use crate::config::RunConfig;
use crate::decode::Limits;
use crate::escalation::{Escalator, SystemClock};
use crate::health::Health;
use crate::model::{LiveModel, Model};
use crate::offsets::OffsetTracker;
use crate::pipeline::{self, Enricher};
use crate::reload;
use crate::reply::{LiveDrafter, ReplyDrafter};
use crate::retry::{Fatal, RetryPolicy};
use crate::sink::{OutputEncoder, OutputKind, Sink, Topics};
use crate::telemetry::{self, metrics};
use crate::{http, source, webhook};

pub async fn run(cfg: RunConfig) -> anyhow::Result<()> {
    telemetry::init_logging(&cfg.telemetry);
    cfg.validate()?;
    let (librdkafka, features) = crate::config::librdkafka_features();
    tracing::info!(%librdkafka, features = %features.join(","), "kafka client library");
    let registry = Arc::new(
        cfg.registry
            .registry(cfg.schema_registry_auto_register)
            .context("configuring the Schema Registry client")?,
    );
    let limits = Limits {
        max_message_bytes: cfg.max_message_bytes,
        max_text_chars: cfg.max_text_chars,
    };
    // Before the model loads: a mapping mistake is a configuration error, reported at once.
    let decoder = cfg.input.decoder(&cfg.topics, limits, registry.clone())?;
    let tracer = telemetry::trace::init();
    let health = Arc::new(Health::default());

    // Probes answer (not ready) while the model loads.
    let listener = tokio::net::TcpListener::bind(&cfg.http_addr)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.http_addr))?;
    tracing::info!(addr = %listener.local_addr()?, "serving /metrics, /healthz, /readyz");
    let reload_slot = Arc::new(std::sync::OnceLock::new());
    tokio::spawn(http::serve(listener, health.clone(), reload_slot.clone()));
    let api_key = cfg.api.key()?;
    let api_listener = match &cfg.api.api_addr {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (--api-addr)"))?,
        ),
        None => None,
    };

    let model_cfg = cfg.model.clone();
    let model = tokio::task::spawn_blocking(move || {
        reload::verify_dir(&model_cfg.model_dir)?;
        Model::load(&model_cfg)
    })
    .await?
    .context("loading the model")?;
    let model = LiveModel::new(model);

    let (fatal, mut fatal_rx) = Fatal::channel();
    let encoder =
        OutputEncoder::new(cfg.output_format, registry).with_retry_timeout(cfg.retry_timeout());
    let drafter: Option<LiveDrafter> = match (&cfg.reply_config, cfg.disable_replies) {
        (_, true) => None,
        (Some(path), false) => Some(
            ReplyDrafter::from_file(path)
                .with_context(|| format!("reply config {}", path.display()))?
                .live(),
        ),
        (None, false) => Some(ReplyDrafter::builtin().live()),
    };
    let escalation = cfg
        .escalation
        .with_thresholds_file()
        .context("escalation thresholds")?;
    let escalator = Arc::new(Escalator::new(&escalation, Arc::new(SystemClock)).await);

    // Every topic an output may go to: all must exist before the first record.
    let mut outputs: Vec<(String, OutputKind)> = vec![
        (cfg.output_topic.clone(), OutputKind::Emotion),
        (cfg.escalation_topic.clone(), OutputKind::Escalation),
    ];
    if let Some(d) = &drafter {
        outputs.extend(
            d.load()
                .topics()
                .into_iter()
                .map(|t| (t.to_string(), OutputKind::Reply)),
        );
    }
    let mut topic_names: Vec<String> = outputs.iter().map(|(t, _)| t.clone()).collect();
    topic_names.extend(cfg.topics.iter().map(|t| cfg.dlq_topic_for(t)));
    topic_names.sort_unstable();
    topic_names.dedup();
    // Avro outputs: register their subjects now (retrying), not on a record's time.
    let encoder = tokio::task::spawn_blocking(move || encoder.prepare(&outputs).map(|()| encoder))
        .await?
        .context("registering the output schemas with the Schema Registry")?;

    let tracker = Arc::new(OffsetTracker::new());
    let consumer = {
        let (cfg, tracker, health) = (cfg.clone(), tracker.clone(), health.clone());
        tokio::task::spawn_blocking(move || source::connect(&cfg, &topic_names, tracker, health))
            .await??
    };
    let transactional_id = cfg.transactional_id();
    let producer = crate::sink::producer(&cfg.kafka, transactional_id.as_deref())
        .context("creating the producer")?;
    if let Some(id) = &transactional_id {
        // Fences an earlier incarnation with the same id and aborts its open transaction.
        let p = producer.clone();
        tokio::task::spawn_blocking(move || {
            rdkafka::producer::Producer::init_transactions(&p, Duration::from_secs(60))
        })
        .await?
        .with_context(|| format!("initialising transactions (transactional.id `{id}`)"))?;
        tracing::info!(transactional_id = %id, "exactly-once mode");
    }

    // The candidate runs on the provider the live model got.
    let live_provider = model.current().provider();
    let shadow = match &cfg.shadow_model_dir {
        Some(dir) => {
            let mut shadow_cfg = cfg.model.clone();
            shadow_cfg.model_dir = dir.clone();
            shadow_cfg.model_sessions = 1;
            let candidate = tokio::task::spawn_blocking(move || {
                reload::load_checked(&shadow_cfg, live_provider)
            })
            .await?
            .with_context(|| format!("loading the shadow model {}", dir.display()))?;
            tracing::info!(
                model_version = %candidate.scorer.model_version,
                sample_rate = cfg.shadow_sample_rate,
                "shadow mode: the candidate scores a sample of messages, never published"
            );
            Some(
                pipeline::Shadow::spawn(candidate, cfg.shadow_sample_rate)
                    .context("starting the shadow model thread")?,
            )
        }
        None => None,
    };
    let enricher = Enricher {
        escalator: Some(escalator.clone()),
        drafter: drafter.clone(),
        draft_threads: cfg.draft.threads(),
        shadow,
    };
    let retry = RetryPolicy {
        timeout: cfg.retry_timeout(),
        fatal: Some(fatal.clone()),
    };
    let (inlet, processed, provider) =
        pipeline::spawn_with(model.clone(), &cfg.model, enricher, retry);
    // The API feeds the same tokenizer → batcher → model path as the Kafka source.
    let api = match api_listener {
        Some(listener) => {
            let api = Api::new(
                &cfg.api,
                api_key,
                inlet.jobs.clone(),
                drafter
                    .clone()
                    .unwrap_or_else(|| ReplyDrafter::builtin().live()),
            );
            tracing::info!(
                addr = %listener.local_addr()?,
                auth = cfg.api.api_key.is_some() || cfg.api.api_key_file.is_some(),
                "serving the HTTP API"
            );
            tokio::spawn(api::serve(listener, api.clone()));
            Some(api)
        }
        None => None,
    };
    metrics()
        .provider_info
        .with_label_values(&[provider.as_str(), cfg.model.execution_provider.as_str()])
        .set(1);
    let live = model.current();
    metrics()
        .model_info
        .with_label_values(&[&live.version, "live"])
        .set(1);
    health.set_model(&live.version, live.id);
    health.set_model_loaded();
    drop(live);
    let reloads = reload::spawn(
        reload::Reloadable {
            model,
            model_cfg: cfg.model.clone(),
            provider,
            replies: match (&cfg.reply_config, &drafter) {
                (Some(path), Some(live)) => Some(reload::Replies {
                    path: path.clone(),
                    live: live.clone(),
                    topics: live.load().topics().into_iter().map(String::from).collect(),
                }),
                _ => None,
            },
            thresholds: Some(reload::Thresholds {
                base: cfg.escalation.clone(),
                escalator,
            }),
            health: health.clone(),
        },
        Some(Duration::from_secs(cfg.reload_poll_secs)),
    )
    .context("installing the SIGHUP handler")?;
    let _ = reload_slot.set(reloads);

    let formats: HashMap<_, _> = cfg
        .topics
        .iter()
        .map(|t| (t.clone(), cfg.format_of(t)))
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let source = source::spawn(source::Source {
        consumer: consumer.clone(),
        decoder,
        formats,
        tracker: tracker.clone(),
        inlet,
        max_in_flight: cfg.max_in_flight,
        max_in_flight_bytes: cfg.max_in_flight_bytes,
        max_message_bytes: cfg.max_message_bytes,
        drain_timeout: cfg.drain_timeout(),
        exactly_once: cfg.exactly_once,
        retry_timeout: cfg.retry_timeout(),
        fatal,
        health: health.clone(),
        stop: stop.clone(),
    });
    let mut sink = tokio::spawn(
        Sink {
            producer: producer.clone(),
            encoder,
            topics: Topics::from_config(&cfg),
            drafter,
            tracker,
            consumer,
            transaction_interval: cfg
                .exactly_once
                .then(|| Duration::from_millis(cfg.commit_interval_ms)),
            webhook: webhook::spawn(&cfg.webhook).context("escalation webhook")?,
        }
        .run(processed),
    );
    tracing::info!(group = %cfg.group, topics = ?cfg.topics, provider = provider.as_str(), "worker running");

    let mut failure = None;
    tokio::select! {
        _ = shutdown_signal() => tracing::info!("shutdown requested: draining"),
        result = &mut sink => {
            failure = Some(match result {
                Ok(Ok(())) => anyhow::anyhow!("sink stopped unexpectedly"),
                Ok(Err(e)) => anyhow::Error::new(e),
                Err(e) => anyhow::Error::new(e),
            });
            health.set_failed();
        }
        Some(reason) = fatal_rx.recv() => {
            // A dependency failed for longer than the retry timeout: stop fetching, let what
            // can finish finish, commit only that, exit non-zero.
            failure = Some(anyhow::anyhow!(reason));
            health.set_failed();
        }
    }
    health.set_draining();
    if let Some(api) = &api {
        // New requests get 503; the pipeline can close once the source lets go too.
        api.close();
    }
    stop.store(true, Ordering::Relaxed);
    // The source thread drains (bounded by the drain timeout), commits and returns.
    tokio::task::spawn_blocking(move || source.join())
        .await?
        .ok();
    if failure.is_none() {
        match tokio::time::timeout(Duration::from_secs(5), &mut sink).await {
            Ok(Ok(Err(e))) => failure = Some(e.into()),
            Ok(Err(e)) => failure = Some(e.into()),
            Err(_) => tracing::warn!("sink did not finish in time"),
            Ok(Ok(Ok(()))) => {}
        }
    }
    let _ = tokio::task::spawn_blocking(move || {
        rdkafka::producer::Producer::flush(&producer, Duration::from_secs(5))
    })
    .await;
    if let Some(provider) = tracer {
        let _ = provider.shutdown();
    }
    match failure {
        Some(e) => Err(e.context(
            "worker stopped after a fatal error; uncommitted records will be reprocessed",
        )),
        None => {
            tracing::info!("worker stopped cleanly");
            Ok(())
        }
    }
}

pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
