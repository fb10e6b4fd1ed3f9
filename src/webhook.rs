//! webhook: escalation events POSTed to a chat or paging service (Slack, Microsoft Teams,
//! PagerDuty Events v2, or plain JSON), after the broker acknowledged the event.
//!
//! Best-effort notification, not part of delivery: the `escalations` topic is the record of
//! truth and offsets never wait for the webhook. The sink hands each acknowledged event to a
//! bounded queue without waiting (a full queue drops the notification and counts it); one task
//! POSTs them in order, retrying transport errors, 429 and 5xx with doubling backoff. A
//! restarted worker may notify an event again: its ids are stable. PagerDuty's `dedup_key` is
//! the event's `incident_id`, so one incident pages once and its later events update it. The payload never carries customer text, customer ids or the scope (which
//! holds a customer hash for repeat contacts).

use std::time::Duration;

use clap::{Args, ValueEnum};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::escalation::{EscalationEvent, EscalationKind, Secret};
use crate::telemetry::metrics;

/// The JSON shape of the POST body.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum WebhookFormat {
    /// Slack incoming webhook (`text` plus Block Kit blocks).
    Slack,
    /// Microsoft Teams workflow webhook ("When a Teams webhook request is received"): an
    /// Adaptive Card message.
    Teams,
    /// PagerDuty Events API v2 (`https://events.pagerduty.com/v2/enqueue`); needs
    /// --escalation-webhook-routing-key.
    Pagerduty,
    /// The event's non-personal fields as one JSON object.
    Generic,
}

/// The escalation webhook (off unless --escalation-webhook-url is set).
#[derive(Args, Debug, Clone)]
pub struct WebhookConfig {
    /// URL escalation events are POSTed to (best-effort; never delays offsets). Kept out of
    /// logs and `Debug`: Slack and Teams URLs carry their secret.
    #[arg(
        long,
        env = "MOODSTREAM_ESCALATION_WEBHOOK_URL",
        hide_env_values = true
    )]
    pub escalation_webhook_url: Option<Secret>,
    /// Body format: slack | teams | pagerduty | generic.
    #[arg(
        long,
        env = "MOODSTREAM_ESCALATION_WEBHOOK_FORMAT",
        value_enum,
        default_value = "generic"
    )]
    pub escalation_webhook_format: WebhookFormat,
    /// PagerDuty integration (routing) key, for --escalation-webhook-format pagerduty.
    #[arg(
        long,
        env = "MOODSTREAM_ESCALATION_WEBHOOK_ROUTING_KEY",
        hide_env_values = true
    )]
    pub escalation_webhook_routing_key: Option<Secret>,
    /// Only events at least this severe are sent: warning | critical.
    #[arg(
        long,
        env = "MOODSTREAM_ESCALATION_WEBHOOK_MIN_SEVERITY",
        value_enum,
        default_value = "warning"
    )]
    pub escalation_webhook_min_severity: MinSeverity,
    /// Most notifications waiting to be sent; beyond, new ones are dropped (and counted).
    #[arg(
        long,
        env = "MOODSTREAM_ESCALATION_WEBHOOK_QUEUE",
        default_value_t = 1000
    )]
    pub escalation_webhook_queue: usize,
    /// Attempts per notification, the first included.
    #[arg(
        long,
        env = "MOODSTREAM_ESCALATION_WEBHOOK_ATTEMPTS",
        default_value_t = 5
    )]
    pub escalation_webhook_attempts: u32,
    /// Wait before the first retry, in ms; doubles per retry, at most 60 s (a Retry-After
    /// header, up to 60 s, wins).
    #[arg(
        long,
        env = "MOODSTREAM_ESCALATION_WEBHOOK_BACKOFF_MS",
        default_value_t = 1000
    )]
    pub escalation_webhook_backoff_ms: u64,
    /// Timeout of one POST, in ms.
    #[arg(
        long,
        env = "MOODSTREAM_ESCALATION_WEBHOOK_TIMEOUT_MS",
        default_value_t = 5000
    )]
    pub escalation_webhook_timeout_ms: u64,
}

/// The lowest severity that is sent.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum MinSeverity {
    Warning,
    Critical,
}

/// Configuration mistakes of the webhook, caught at startup.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum WebhookConfigError {
    #[error("--escalation-webhook-url must be an http:// or https:// URL")]
    BadUrl,
    #[error("--escalation-webhook-format pagerduty needs --escalation-webhook-routing-key")]
    NoRoutingKey,
    #[error("{0} must be at least 1")]
    Zero(&'static str),
}

impl WebhookConfig {
    pub fn validate(&self) -> Result<(), WebhookConfigError> {
        let Some(url) = &self.escalation_webhook_url else {
            return Ok(());
        };
        let url = url.expose();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(WebhookConfigError::BadUrl);
        }
        if self.escalation_webhook_format == WebhookFormat::Pagerduty
            && self
                .escalation_webhook_routing_key
                .as_ref()
                .is_none_or(|k| k.expose().is_empty())
        {
            return Err(WebhookConfigError::NoRoutingKey);
        }
        if self.escalation_webhook_queue == 0 {
            return Err(WebhookConfigError::Zero("webhook queue"));
        }
        if self.escalation_webhook_attempts == 0 {
            return Err(WebhookConfigError::Zero("webhook attempts"));
        }
        Ok(())
    }
}

/// What a notification may say about an event: no customer text, customer id, scope or
/// message ids.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    pub escalation_id: String,
    /// The incident the event belongs to (its own id when it opened it).
    pub incident_id: String,
    pub kind: EscalationKind,
    pub critical: bool,
    pub reasons: Vec<String>,
    pub tenant_id: Option<String>,
    pub channel: Option<String>,
    pub conversation_id: Option<String>,
    pub message_count: i64,
    pub negative_count: i64,
    pub negative_rate: Option<f64>,
    pub baseline_rate: Option<f64>,
    pub score: f64,
    pub threshold: f64,
    pub detected_at: i64,
    pub degraded: bool,
}

impl From<&EscalationEvent> for Notification {
    fn from(e: &EscalationEvent) -> Notification {
        Notification {
            escalation_id: e.escalation_id.clone(),
            incident_id: e
                .incident_id
                .clone()
                .unwrap_or_else(|| e.escalation_id.clone()),
            kind: e.kind,
            critical: e.severity == crate::escalation::Severity::Critical,
            reasons: e.reasons.clone(),
            tenant_id: e.tenant_id.clone(),
            channel: e.channel.clone(),
            conversation_id: e.conversation_id.clone(),
            message_count: e.message_count,
            negative_count: e.negative_count,
            negative_rate: e.negative_rate,
            baseline_rate: e.baseline_rate,
            score: e.score,
            threshold: e.threshold,
            detected_at: e.detected_at,
            degraded: e.degraded,
        }
    }
}

impl Notification {
    fn severity(&self) -> &'static str {
        if self.critical { "critical" } else { "warning" }
    }

    /// One line for chat messages and PagerDuty's summary.
    fn summary(&self) -> String {
        let what = match self.kind {
            EscalationKind::Surge => "Negative-emotion surge",
            EscalationKind::ConversationTrend => "Conversation turning negative",
            EscalationKind::RepeatContact => "Repeated negative contact",
        };
        let place = [self.tenant_id.as_deref(), self.channel.as_deref()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" / ");
        let mut s = format!("[{}] {what}", self.severity());
        if !place.is_empty() {
            s.push_str(&format!(" on {place}"));
        }
        if let Some(c) = &self.conversation_id {
            s.push_str(&format!(" (conversation {c})"));
        }
        s
    }

    fn details(&self) -> Value {
        json!({
            "escalation_id": self.escalation_id,
            "incident_id": self.incident_id,
            "kind": self.kind.as_str(),
            "severity": self.severity(),
            "reasons": self.reasons,
            "tenant_id": self.tenant_id,
            "channel": self.channel,
            "conversation_id": self.conversation_id,
            "message_count": self.message_count,
            "negative_count": self.negative_count,
            "negative_rate": self.negative_rate,
            "baseline_rate": self.baseline_rate,
            "score": self.score,
            "threshold": self.threshold,
            "detected_at": self.detected_at,
            "degraded": self.degraded,
        })
    }

    /// The POST body in `format`.
    pub fn body(&self, format: WebhookFormat, routing_key: Option<&str>) -> Value {
        let summary = self.summary();
        let facts = format!(
            "kind {} · score {:.2} (threshold {:.2}) · {} negative of {} messages · reasons: {} · id {}",
            self.kind.as_str(),
            self.score,
            self.threshold,
            self.negative_count,
            self.message_count,
            self.reasons.join(", "),
            self.escalation_id
        );
        match format {
            WebhookFormat::Generic => self.details(),
            WebhookFormat::Slack => json!({
                "text": summary,
                "blocks": [
                    {"type": "section", "text": {"type": "mrkdwn", "text": format!("*{summary}*")}},
                    {"type": "context", "elements": [{"type": "mrkdwn", "text": facts}]},
                ],
            }),
            WebhookFormat::Teams => json!({
                "type": "message",
                "attachments": [{
                    "contentType": "application/vnd.microsoft.card.adaptive",
                    "content": {
                        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                        "type": "AdaptiveCard",
                        "version": "1.4",
                        "body": [
                            {"type": "TextBlock", "text": summary, "weight": "Bolder", "wrap": true,
                             "color": if self.critical { "Attention" } else { "Warning" }},
                            {"type": "TextBlock", "text": facts, "wrap": true, "isSubtle": true},
                        ],
                    },
                }],
            }),
            WebhookFormat::Pagerduty => json!({
                "routing_key": routing_key.unwrap_or_default(),
                "event_action": "trigger",
                "dedup_key": self.incident_id,
                "payload": {
                    "summary": summary,
                    "source": "moodstream",
                    "severity": self.severity(),
                    "class": self.kind.as_str(),
                    "group": self.tenant_id,
                    "component": self.channel,
                    "custom_details": self.details(),
                },
            }),
        }
    }
}

/// The sink's handle: hands notifications to the delivery task without waiting.
#[derive(Clone, Debug)]
pub struct Notifier {
    tx: mpsc::Sender<Notification>,
    min_critical: bool,
}

impl Notifier {
    /// Queues `event` unless it is below the minimum severity; a full queue drops it.
    pub fn notify(&self, event: &EscalationEvent) {
        let n = Notification::from(event);
        if self.min_critical && !n.critical {
            return;
        }
        if self.tx.try_send(n).is_err() {
            record("dropped");
            tracing::warn!(
                "escalation webhook queue full (or its task stopped); notification dropped"
            );
        }
    }
}

fn record(result: &str) {
    metrics()
        .webhook_notifications
        .with_label_values(&[result])
        .inc();
}

/// Starts the delivery task when a URL is configured.
pub fn spawn(cfg: &WebhookConfig) -> anyhow::Result<Option<Notifier>> {
    let Some(url) = cfg.escalation_webhook_url.clone() else {
        return Ok(None);
    };
    crate::telemetry::install_tls_provider();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(cfg.escalation_webhook_timeout_ms))
        .build()?;
    let (tx, rx) = mpsc::channel(cfg.escalation_webhook_queue);
    let delivery = Delivery {
        client,
        url,
        format: cfg.escalation_webhook_format,
        routing_key: cfg.escalation_webhook_routing_key.clone(),
        attempts: cfg.escalation_webhook_attempts,
        backoff: Duration::from_millis(cfg.escalation_webhook_backoff_ms),
    };
    tokio::spawn(delivery.run(rx));
    tracing::info!(format = ?cfg.escalation_webhook_format, "escalation webhook on");
    Ok(Some(Notifier {
        tx,
        min_critical: cfg.escalation_webhook_min_severity == MinSeverity::Critical,
    }))
}

const MAX_BACKOFF: Duration = Duration::from_secs(60);

struct Delivery {
    client: reqwest::Client,
    url: Secret,
    format: WebhookFormat,
    routing_key: Option<Secret>,
    attempts: u32,
    backoff: Duration,
}

/// What one POST said.
enum Outcome {
    Delivered,
    /// Worth another try (transport error, 408, 429, 5xx), after the server's Retry-After if given.
    Retry(Option<Duration>),
    /// The receiver refuses this body (other 4xx): retrying cannot help.
    Rejected(u16),
}

impl Delivery {
    async fn run(self, mut rx: mpsc::Receiver<Notification>) {
        while let Some(n) = rx.recv().await {
            let body = n.body(self.format, self.routing_key.as_ref().map(Secret::expose));
            let result = self.deliver(&body).await;
            record(result);
        }
    }

    async fn deliver(&self, body: &Value) -> &'static str {
        let mut wait = self.backoff;
        for attempt in 1..=self.attempts {
            match self.post(body).await {
                Outcome::Delivered => return "delivered",
                Outcome::Rejected(status) => {
                    tracing::warn!(status, "escalation webhook rejected a notification");
                    return "rejected";
                }
                Outcome::Retry(after) if attempt < self.attempts => {
                    metrics().webhook_retries.inc();
                    tokio::time::sleep(after.unwrap_or(wait).min(MAX_BACKOFF)).await;
                    wait = (wait * 2).min(MAX_BACKOFF);
                }
                Outcome::Retry(_) => {}
            }
        }
        tracing::warn!(
            attempts = self.attempts,
            "escalation webhook failed; notification given up"
        );
        "failed"
    }

    async fn post(&self, body: &Value) -> Outcome {
        match self.client.post(self.url.expose()).json(body).send().await {
            Ok(resp) => {
                let status = resp.status();
                if status.is_success() {
                    Outcome::Delivered
                } else if status.as_u16() == 408
                    || status.as_u16() == 429
                    || status.is_server_error()
                {
                    let after = resp
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
                        .map(Duration::from_secs);
                    tracing::debug!(status = status.as_u16(), "escalation webhook: will retry");
                    Outcome::Retry(after)
                } else {
                    Outcome::Rejected(status.as_u16())
                }
            }
            // The error's text may contain the URL (a secret for Slack and Teams): not logged.
            Err(e) => {
                tracing::debug!(
                    timeout = e.is_timeout(),
                    connect = e.is_connect(),
                    "escalation webhook: request failed; will retry"
                );
                Outcome::Retry(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::escalation::Severity;

    fn event() -> EscalationEvent {
        EscalationEvent {
            escalation_id: "esc-1".into(),
            incident_id: Some("inc-1".into()),
            kind: EscalationKind::RepeatContact,
            severity: Severity::Critical,
            reasons: vec!["repeat_negative_contact".into()],
            scope: "customer:acme:5f1d".into(),
            tenant_id: Some("acme".into()),
            channel: Some("chat".into()),
            conversation_id: Some("conv-7".into()),
            customer_id: Some("cust-secret-42".into()),
            window_start: 1,
            window_end: 2,
            message_count: 6,
            negative_count: 6,
            negative_rate: Some(1.0),
            baseline_count: None,
            baseline_rate: None,
            conversation_count: Some(3),
            score: 6.0,
            threshold: 3.0,
            trigger_message_ids: vec!["msg-secret-1".into()],
            first_seen: 1,
            detected_at: 2,
            degraded: false,
            model_version: None,
        }
    }

    #[test]
    fn no_format_carries_the_customer_id_the_scope_or_message_ids() {
        let n = Notification::from(&event());
        for format in WebhookFormat::value_variants() {
            let body = n.body(*format, Some("rk")).to_string();
            assert!(!body.contains("cust-secret-42"), "{format:?}: {body}");
            assert!(!body.contains("5f1d"), "{format:?}: {body}");
            assert!(!body.contains("msg-secret-1"), "{format:?}: {body}");
            assert!(body.contains("esc-1"), "{format:?} names the escalation");
        }
    }

    #[test]
    fn pagerduty_dedups_on_the_incident_id() {
        let body = Notification::from(&event()).body(WebhookFormat::Pagerduty, Some("rk"));
        assert_eq!(body["routing_key"], "rk");
        assert_eq!(body["event_action"], "trigger");
        assert_eq!(body["dedup_key"], "inc-1", "one page per incident");
        assert_eq!(body["payload"]["custom_details"]["escalation_id"], "esc-1");
        assert_eq!(body["payload"]["severity"], "critical");
        assert_eq!(body["payload"]["source"], "moodstream");
    }

    #[test]
    fn slack_and_teams_bodies_have_their_required_fields() {
        let n = Notification::from(&event());
        let slack = n.body(WebhookFormat::Slack, None);
        assert!(
            slack["text"]
                .as_str()
                .unwrap()
                .contains("Repeated negative contact")
        );
        let teams = n.body(WebhookFormat::Teams, None);
        assert_eq!(teams["type"], "message");
        assert_eq!(
            teams["attachments"][0]["contentType"],
            "application/vnd.microsoft.card.adaptive"
        );
    }

    #[test]
    fn validation_needs_a_routing_key_for_pagerduty() {
        let mut cfg = WebhookConfig {
            escalation_webhook_url: Some(Secret::from(
                "https://events.pagerduty.com/v2/enqueue".to_string(),
            )),
            escalation_webhook_format: WebhookFormat::Pagerduty,
            escalation_webhook_routing_key: None,
            escalation_webhook_min_severity: MinSeverity::Warning,
            escalation_webhook_queue: 10,
            escalation_webhook_attempts: 3,
            escalation_webhook_backoff_ms: 10,
            escalation_webhook_timeout_ms: 100,
        };
        assert_eq!(cfg.validate(), Err(WebhookConfigError::NoRoutingKey));
        cfg.escalation_webhook_routing_key = Some(Secret::from("rk".to_string()));
        assert_eq!(cfg.validate(), Ok(()));
        assert!(
            !format!("{cfg:?}").contains("pagerduty.com"),
            "URL kept out of Debug"
        );
        cfg.escalation_webhook_url = Some(Secret::from("ftp://x".to_string()));
        assert_eq!(cfg.validate(), Err(WebhookConfigError::BadUrl));
    }

    #[tokio::test]
    async fn a_full_queue_drops_instead_of_waiting() {
        let (tx, _rx) = mpsc::channel(1);
        let notifier = Notifier {
            tx,
            min_critical: false,
        };
        let before = metrics()
            .webhook_notifications
            .with_label_values(&["dropped"])
            .get();
        notifier.notify(&event());
        notifier.notify(&event());
        let after = metrics()
            .webhook_notifications
            .with_label_values(&["dropped"])
            .get();
        assert_eq!(after - before, 1);
    }
}
