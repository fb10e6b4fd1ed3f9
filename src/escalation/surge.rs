//! Surge (pure logic): negative messages in a scope (tenant × channel by default) well above
//! that scope's normal level. Counts live in fixed time buckets; the recent window's negative
//! rate is compared with the baseline window just before it:
//!
//! - at least `surge_min_negative` negatives in the recent window, and at least
//!   `surge_min_baseline_messages` messages in the baseline (an unknown scope is not judged);
//! - baseline rate `p0 = max(baseline negatives / baseline messages, floor)`;
//! - `factor = recent rate / p0 >= surge_rate_factor` and binomial
//!   `z = (recent rate - p0) / sqrt(p0 (1 - p0) / recent messages) >= surge_z_threshold`
//!   (either test is off when its threshold is 0);
//! - critical when the factor also reaches `surge_critical_factor`.

use crate::message::CustomerMessage;

use super::config::{EscalationConfig, ScopeKey};
use super::event::{Detection, EscalationKind, Severity, WindowStats};

/// Counts of one scope around the current time, read after counting the current message.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct SurgeWindow {
    /// Bucket index of the replica's "now"; the recent window ends with it.
    pub now_bucket: i64,
    pub recent_total: i64,
    pub recent_negative: i64,
    pub baseline_total: i64,
    pub baseline_negative: i64,
    /// Oldest bucket of the recent window holding a negative message.
    pub first_negative_bucket: Option<i64>,
    /// The scope's latest negative messages `(event ms, message id)`, oldest first, bounded;
    /// those before the recent window are ignored.
    pub recent_negatives: Vec<(i64, String)>,
}

/// A message's surge scope.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SurgeScope {
    /// `tenant=acme,channel=chat`: values escaped so the label is unambiguous.
    pub label: String,
    pub tenant_id: Option<String>,
    pub channel: Option<String>,
}

impl SurgeScope {
    pub fn of(keys: &[ScopeKey], msg: &CustomerMessage) -> Self {
        let mut tenant_id = None;
        let mut channel = None;
        let parts: Vec<String> = keys
            .iter()
            .map(|key| {
                let value = match key {
                    ScopeKey::Tenant => {
                        tenant_id.clone_from(&msg.tenant_id);
                        msg.tenant_id.as_deref().unwrap_or_default()
                    }
                    ScopeKey::Channel => {
                        channel = Some(msg.channel.clone());
                        msg.channel.as_str()
                    }
                    ScopeKey::Metadata(name) => msg
                        .metadata
                        .get(name)
                        .map(String::as_str)
                        .unwrap_or_default(),
                };
                format!("{}={}", key.name(), escape(value))
            })
            .collect();
        Self {
            label: parts.join(","),
            tenant_id,
            channel,
        }
    }
}

fn escape(value: &str) -> String {
    value
        .replace('%', "%25")
        .replace(',', "%2C")
        .replace('=', "%3D")
}

pub(crate) fn assess(cfg: &EscalationConfig, w: &SurgeWindow) -> Option<Detection> {
    if w.recent_total <= 0
        || w.recent_negative < i64::try_from(cfg.surge_min_negative).unwrap_or(i64::MAX)
        || w.baseline_total < i64::try_from(cfg.surge_min_baseline_messages).unwrap_or(i64::MAX)
        || w.baseline_total <= 0
    {
        return None;
    }
    let recent_rate = w.recent_negative as f64 / w.recent_total as f64;
    let observed_baseline = w.baseline_negative as f64 / w.baseline_total as f64;
    // Kept below 1 so the z-score stays finite; a scope that is always negative cannot surge.
    let p0 = observed_baseline
        .max(cfg.surge_min_baseline_rate)
        .min(0.999);
    let factor = recent_rate / p0;
    let z = (recent_rate - p0) / (p0 * (1.0 - p0) / w.recent_total as f64).sqrt();
    let factor_ok = factor >= cfg.surge_rate_factor;
    let z_ok = z >= cfg.surge_z_threshold;
    if !(factor_ok && z_ok) || recent_rate <= p0 {
        return None;
    }
    let mut reasons = Vec::new();
    if cfg.surge_rate_factor > 0.0 {
        reasons.push("negative_rate_factor");
    }
    if cfg.surge_z_threshold > 0.0 {
        reasons.push("negative_rate_zscore");
    }
    let severity = if factor >= cfg.surge_critical_factor {
        Severity::Critical
    } else {
        Severity::Warning
    };
    let bucket_ms = cfg.bucket_ms();
    let window_start = (w.now_bucket - cfg.recent_buckets() + 1) * bucket_ms;
    let in_window: Vec<&(i64, String)> = w
        .recent_negatives
        .iter()
        .filter(|(event_ms, _)| *event_ms >= window_start)
        .collect();
    let skip = in_window.len().saturating_sub(cfg.max_trigger_ids);
    Some(Detection {
        kind: EscalationKind::Surge,
        severity,
        reasons,
        stats: WindowStats {
            window_start,
            window_end: (w.now_bucket + 1) * bucket_ms,
            message_count: w.recent_total,
            negative_count: w.recent_negative,
            negative_rate: Some(recent_rate),
            baseline_count: Some(w.baseline_total),
            baseline_rate: Some(observed_baseline),
            conversation_count: None,
            score: z,
            threshold: cfg.surge_z_threshold,
        },
        trigger_message_ids: in_window[skip..].iter().map(|(_, id)| id.clone()).collect(),
        first_seen: w
            .first_negative_bucket
            .map_or(window_start, |b| b * bucket_ms),
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn never_fires_unless_the_recent_rate_is_above_the_baseline(
            recent_total in 0i64..5_000,
            recent_share in 0.0f64..=1.0,
            baseline_total in 0i64..50_000,
            baseline_share in 0.0f64..=1.0,
        ) {
            let cfg = EscalationConfig::default();
            let recent_negative = (recent_total as f64 * recent_share) as i64;
            let baseline_negative = (baseline_total as f64 * baseline_share) as i64;
            let w = SurgeWindow {
                now_bucket: 1_000,
                recent_total,
                recent_negative,
                baseline_total,
                baseline_negative,
                ..SurgeWindow::default()
            };
            if let Some(d) = assess(&cfg, &w) {
                let recent = recent_negative as f64 / recent_total as f64;
                let baseline = baseline_negative as f64 / baseline_total as f64;
                prop_assert!(recent >= cfg.surge_rate_factor * baseline);
                prop_assert!(d.stats.score.is_finite() && d.stats.score >= cfg.surge_z_threshold);
                prop_assert!(recent_negative >= cfg.surge_min_negative as i64);
            }
        }
    }

    fn window(recent: (i64, i64), baseline: (i64, i64)) -> SurgeWindow {
        SurgeWindow {
            now_bucket: 1_000,
            recent_total: recent.0,
            recent_negative: recent.1,
            baseline_total: baseline.0,
            baseline_negative: baseline.1,
            first_negative_bucket: Some(996),
            // One negative from before the recent window, fifteen inside it.
            recent_negatives: (-1..15)
                .map(|i| (995 * 10_000 + i * 1_000, format!("m{i}")))
                .collect(),
        }
    }

    #[test]
    fn burst_well_above_baseline_is_a_surge() {
        let cfg = EscalationConfig::default();
        // 40% negative against a 10% baseline: factor 4, z = 0.3 / sqrt(.09 / 50) = 7.07.
        let detection = assess(&cfg, &window((50, 20), (900, 90))).expect("surge");
        assert_eq!(detection.severity, Severity::Critical);
        assert!((detection.stats.score - 7.07).abs() < 0.01);
        assert_eq!(detection.stats.baseline_rate, Some(0.1));
        assert_eq!(detection.stats.window_start, 995 * 10_000);
        assert_eq!(detection.stats.window_end, 1_001 * 10_000);
        assert_eq!(detection.first_seen, 996 * 10_000);
        assert_eq!(detection.trigger_message_ids.len(), 10);
        assert_eq!(
            detection.trigger_message_ids.last().map(String::as_str),
            Some("m14")
        );
    }

    #[test]
    fn moderate_rise_is_a_warning() {
        let cfg = EscalationConfig::default();
        // 25% against 10%: factor 2.5, z = .15 / sqrt(.09 / 100) = 5.
        let detection = assess(&cfg, &window((100, 25), (900, 90))).expect("surge");
        assert_eq!(detection.severity, Severity::Warning);
    }

    #[test]
    fn normal_rate_is_not_a_surge() {
        let cfg = EscalationConfig::default();
        assert_eq!(assess(&cfg, &window((100, 12), (900, 90))), None);
    }

    #[test]
    fn too_few_negatives_are_not_a_surge() {
        let cfg = EscalationConfig::default();
        // 9 of 10 negative, but below the minimum count of 10.
        assert_eq!(assess(&cfg, &window((10, 9), (900, 90))), None);
    }

    #[test]
    fn unknown_scope_without_baseline_is_not_judged() {
        let cfg = EscalationConfig::default();
        assert_eq!(assess(&cfg, &window((40, 30), (20, 0))), None);
    }

    #[test]
    fn spotless_baseline_uses_the_rate_floor() {
        let cfg = EscalationConfig::default();
        // 8% against a clean baseline: floor 5% gives factor 1.6 < 2.
        assert_eq!(assess(&cfg, &window((200, 16), (900, 0))), None);
        // 20% against the floor: factor 4.
        assert!(assess(&cfg, &window((100, 20), (900, 0))).is_some());
    }

    #[test]
    fn small_sample_needs_a_significant_z_score() {
        let cfg = EscalationConfig {
            surge_min_negative: 2,
            ..EscalationConfig::default()
        };
        // 2 of 4 against 20%: factor 2.5, z = .3 / sqrt(.16 / 4) = 1.5 < 3.
        assert_eq!(assess(&cfg, &window((4, 2), (900, 180))), None);
    }

    #[test]
    fn scope_label_follows_configured_keys_and_escapes_values() {
        let mut msg = crate::escalation::tests::message("m1", "conv", "cust", 0);
        msg.tenant_id = Some("ac,me".into());
        msg.metadata.insert("queue".into(), "billing=eu".into());
        let keys = [
            ScopeKey::Tenant,
            ScopeKey::Channel,
            ScopeKey::Metadata("queue".into()),
        ];
        let scope = SurgeScope::of(&keys, &msg);
        assert_eq!(
            scope.label,
            "tenant=ac%2Cme,channel=chat,metadata.queue=billing%3Deu"
        );
        assert_eq!(scope.tenant_id.as_deref(), Some("ac,me"));
        assert_eq!(scope.channel.as_deref(), Some("chat"));
        let tenant_only = SurgeScope::of(&[ScopeKey::Tenant], &msg);
        assert_eq!(tenant_only.channel, None);
    }
}
