//! W3C trace context across Kafka: extract `traceparent` from an input record's headers, record
//! one span per pipeline stage under it, and inject the context into every output's headers.
//! Export is OTLP over HTTP, configured by the standard `OTEL_*` variables and off when no
//! endpoint is set (then outputs still carry the input's trace context).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{Span, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue, global};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use rdkafka::message::{BorrowedHeaders, Header, Headers, OwnedHeaders};

use super::install_tls_provider;

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Sets up the propagator and, when `OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT` is set, the OTLP
/// exporter. Keep the returned provider alive and shut it down on exit to flush spans.
pub fn init() -> Option<SdkTracerProvider> {
    global::set_text_map_propagator(TraceContextPropagator::new());
    let configured = [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|v| std::env::var(v).is_ok_and(|s| !s.is_empty()));
    if !configured || std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v == "true") {
        return None;
    }
    install_tls_provider();
    let exporter = match opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
    {
        Ok(exporter) => exporter,
        Err(e) => {
            tracing::warn!(error = %e, "OTLP exporter not configured; tracing disabled");
            return None;
        }
    };
    let service = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| "moodstream".into());
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(service)
                .build(),
        )
        .build();
    global::set_tracer_provider(provider.clone());
    ENABLED.store(true, Ordering::Relaxed);
    tracing::info!("OpenTelemetry tracing enabled (OTLP/HTTP)");
    Some(provider)
}

fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

struct HeaderExtractor<'a>(&'a BorrowedHeaders);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|h| h.key.eq_ignore_ascii_case(key))
            .and_then(|h| h.value)
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|h| h.key).collect()
    }
}

#[derive(Default)]
struct HeaderInjector(Vec<(String, String)>);

impl Injector for HeaderInjector {
    fn set(&mut self, key: &str, value: String) {
        self.0.push((key.to_string(), value));
    }
}

/// The trace of one message through the pipeline. Cheap when tracing is off.
#[derive(Clone, Debug, Default)]
pub struct MessageTrace {
    cx: Context,
}

impl MessageTrace {
    /// Continues the trace named by the record's `traceparent` header (a new root if absent),
    /// with a `moodstream.process` span for this message when export is on.
    pub fn from_headers(headers: Option<&BorrowedHeaders>) -> MessageTrace {
        let parent = match headers {
            Some(h) => TraceContextPropagator::new().extract(&HeaderExtractor(h)),
            None => Context::new(),
        };
        if !enabled() {
            return MessageTrace { cx: parent };
        }
        let span = global::tracer("moodstream").start_with_context("moodstream.process", &parent);
        MessageTrace {
            cx: parent.with_span(span),
        }
    }

    /// Records a finished stage as a child span (decode, batch_wait, inference, produce).
    pub fn stage(
        &self,
        name: &'static str,
        start: SystemTime,
        end: SystemTime,
        attrs: Vec<KeyValue>,
    ) {
        if !enabled() {
            return;
        }
        let tracer = global::tracer("moodstream");
        let mut span = tracer
            .span_builder(name)
            .with_start_time(start)
            .with_attributes(attrs)
            .start_with_context(&tracer, &self.cx);
        span.end_with_timestamp(end);
    }

    /// Ends the per-message span (after the last output is acknowledged).
    pub fn finish(&self) {
        if enabled() {
            self.cx.span().end();
        }
    }

    /// The trace context headers for an output record.
    pub fn inject(&self, headers: OwnedHeaders) -> OwnedHeaders {
        let mut injector = HeaderInjector::default();
        TraceContextPropagator::new().inject_context(&self.cx, &mut injector);
        injector.0.iter().fold(headers, |h, (k, v)| {
            h.insert(Header {
                key: k,
                value: Some(v.as_bytes()),
            })
        })
    }
}
