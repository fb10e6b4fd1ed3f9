//! telemetry: structured logs, Prometheus metrics and OpenTelemetry traces. Customer text and
//! customer ids stay out of all three.

mod metrics;
pub mod trace;

pub use metrics::{Metrics, metrics};

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, TelemetryConfig};

/// Installs the log subscriber (JSON by default; `RUST_LOG` filters, default `info`).
/// Safe to call more than once (later calls keep the first subscriber).
pub fn init_logging(cfg: &TelemetryConfig) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match cfg.log_format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Plain text logs to stderr for the one-shot commands (`classify`, `bench`, `demo-produce`).
pub fn init_cli_logging() {
    init_logging(&TelemetryConfig {
        log_format: LogFormat::Text,
    });
}

/// Installs ring as the process's rustls crypto provider, once. reqwest (the Schema Registry
/// client, the OTLP exporter) is built without a provider of its own and needs one installed;
/// ring is the one rustls is compiled with here (redis' TLS uses it too).
pub fn install_tls_provider() {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        // Err only when a provider is already installed, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
