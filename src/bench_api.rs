//! bench_api: `moodstream bench-api` — a closed-loop load generator for a running worker's HTTP
//! API. `--concurrency` clients each send their next request when the previous one is answered,
//! for `--seconds`; it reports throughput (requests and messages per second) and latency
//! percentiles. Messages are the benchmark's realistic synthetic ones (`demo`).

use std::time::{Duration, Instant};

use anyhow::Context;

use crate::config::BenchApiConfig;
use crate::demo::{Rng, realistic_texts, synthetic};

/// Distinct messages the clients cycle over.
const POOL: usize = 2_000;

/// What one client saw.
#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    messages: usize,
    /// Non-200 answers and transport errors, by status (0 = no answer).
    errors: Vec<u16>,
}

pub async fn run(cfg: BenchApiConfig) -> anyhow::Result<()> {
    anyhow::ensure!(cfg.concurrency > 0, "--concurrency must be at least 1");
    anyhow::ensure!(cfg.batch > 0, "--batch must be at least 1");
    anyhow::ensure!(
        cfg.route == "classify" || cfg.route == "draft",
        "--route must be classify or draft"
    );
    let url = format!("{}/v1/{}", cfg.url.trim_end_matches('/'), cfg.route);
    let mut rng = Rng::new(cfg.seed);
    let bodies: Vec<String> = realistic_texts(&mut rng, POOL)
        .into_iter()
        .enumerate()
        .map(|(i, t)| synthetic(&mut rng, i, t))
        .collect::<Vec<_>>()
        .chunks(cfg.batch)
        .map(|chunk| serde_json::to_string(chunk).expect("messages serialize: bug"))
        .collect();
    let seconds = Duration::from_secs_f64(cfg.seconds.max(0.1));
    let tallies = tokio::task::spawn_blocking(move || {
        let handles: Vec<_> = (0..cfg.concurrency)
            .map(|client| {
                let (url, key, bodies) = (url.clone(), cfg.api_key.clone(), bodies.clone());
                std::thread::spawn(move || load(&url, key.as_deref(), &bodies, client, seconds))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("client thread panicked: bug"))
            .collect::<anyhow::Result<Vec<Tally>>>()
    })
    .await??;
    let elapsed = seconds.as_secs_f64();
    let mut latencies: Vec<Duration> = tallies.iter().flat_map(|t| t.latencies.clone()).collect();
    latencies.sort_unstable();
    let messages: usize = tallies.iter().map(|t| t.messages).sum();
    let errors: Vec<u16> = tallies.iter().flat_map(|t| t.errors.clone()).collect();
    let pct = |p: f64| -> f64 {
        if latencies.is_empty() {
            return f64::NAN;
        }
        let i = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[i].as_secs_f64() * 1000.0
    };
    println!(
        "bench-api: POST /v1/{} concurrency {} batch {} for {:.1} s",
        cfg.route, cfg.concurrency, cfg.batch, elapsed
    );
    println!(
        "  requests {} ok, {} failed {:?}",
        latencies.len(),
        errors.len(),
        summarize(&errors)
    );
    println!(
        "  throughput {:.1} requests/s, {:.1} messages/s",
        latencies.len() as f64 / elapsed,
        messages as f64 / elapsed
    );
    println!(
        "  latency ms: p50 {:.1}, p90 {:.1}, p99 {:.1}, max {:.1}",
        pct(0.50),
        pct(0.90),
        pct(0.99),
        pct(1.0)
    );
    anyhow::ensure!(!latencies.is_empty(), "no request succeeded");
    Ok(())
}

/// One client: a warm-up request (not counted), then requests back to back until `seconds`.
fn load(
    url: &str,
    key: Option<&str>,
    bodies: &[String],
    client: usize,
    seconds: Duration,
) -> anyhow::Result<Tally> {
    crate::telemetry::install_tls_provider();
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .context("an HTTP client")?;
    // The answer's body, or the status code (0: no answer at all).
    let send = |body: &str| -> Result<String, u16> {
        let mut req = http
            .post(url)
            .header("Content-Type", "application/json")
            .body(body.to_owned());
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        let resp = req.send().map_err(|_| 0_u16)?;
        let status = resp.status();
        if !status.is_success() {
            return Err(status.as_u16());
        }
        resp.text().map_err(|_| 0_u16)
    };
    send(&bodies[client % bodies.len()])
        .map_err(|code| anyhow::anyhow!("warm-up request to {url} failed ({code})"))?;
    let mut tally = Tally::default();
    let end = Instant::now() + seconds;
    let mut next = client;
    while Instant::now() < end {
        let body = &bodies[next % bodies.len()];
        next += 7;
        let start = Instant::now();
        match send(body) {
            Ok(text) => {
                let answers: Vec<serde_json::Value> =
                    serde_json::from_str(&text).context("a JSON array answer")?;
                tally.latencies.push(start.elapsed());
                tally.messages += answers.len();
            }
            Err(code) => tally.errors.push(code),
        }
    }
    Ok(tally)
}

fn summarize(errors: &[u16]) -> Vec<(u16, usize)> {
    let mut counts = std::collections::BTreeMap::new();
    for &e in errors {
        *counts.entry(e).or_insert(0) += 1;
    }
    counts.into_iter().collect()
}
