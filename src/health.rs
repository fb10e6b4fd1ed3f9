//! health: the process state behind `/healthz` and `/readyz`.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How long an authorisation error keeps `/healthz` failing after it was last seen.
const CONSUMER_ERROR_TTL: Duration = Duration::from_secs(60);

#[derive(Default)]
pub struct Health {
    model_loaded: AtomicBool,
    in_group: AtomicBool,
    draining: AtomicBool,
    failed: AtomicBool,
    /// The last fatal or authorisation consumer error, and when it was seen.
    consumer_error: Mutex<Option<(String, Instant)>>,
    /// What `/readyz` says about the model beside ready / not ready.
    model: Mutex<ModelStatus>,
}

#[derive(Default)]
struct ModelStatus {
    version: String,
    generation: u64,
    /// Why the last reload failed, until one succeeds: the previous model is still live.
    reload_error: Option<String>,
}

impl Health {
    pub fn set_model_loaded(&self) {
        self.model_loaded.store(true, Ordering::Relaxed);
    }

    /// The live model, after startup or a successful reload (which clears a reload error).
    pub fn set_model(&self, version: &str, generation: u64) {
        let mut m = self.model.lock().expect("health poisoned: bug");
        m.version = version.to_string();
        m.generation = generation;
        m.reload_error = None;
    }

    /// A reload failed and the previous model stays live. Readiness is unchanged (the worker
    /// still labels every message), but `/readyz` says so until a reload succeeds.
    pub fn set_reload_error(&self, reason: String) {
        self.model
            .lock()
            .expect("health poisoned: bug")
            .reload_error = Some(reason);
    }

    /// The lines `/readyz` adds after ready / not ready: the live model and a failed reload.
    pub fn model_detail(&self) -> String {
        let m = self.model.lock().expect("health poisoned: bug");
        let mut detail = String::new();
        if !m.version.is_empty() {
            detail.push_str(&format!(
                "model: {} (generation {})\n",
                m.version, m.generation
            ));
        }
        if let Some(reason) = &m.reload_error {
            detail.push_str(&format!(
                "last reload failed, previous model still live: {reason}\n"
            ));
        }
        detail
    }

    pub fn set_in_group(&self, v: bool) {
        self.in_group.store(v, Ordering::Relaxed);
    }

    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// A stage died: liveness fails so Kubernetes restarts the pod.
    pub fn set_failed(&self) {
        self.failed.store(true, Ordering::Relaxed);
    }

    /// A consumer error an operator must see (`reason` carries no customer data): `/healthz`
    /// fails and names it — for good when `fatal`, else until a minute after the last one.
    pub fn set_consumer_error(&self, reason: String, fatal: bool) {
        *self.consumer_error.lock().expect("health poisoned: bug") = Some((reason, Instant::now()));
        if fatal {
            self.set_failed();
        }
    }

    /// Why the process is not healthy, or `None` when it is.
    pub fn problem(&self) -> Option<String> {
        let failed = self.failed.load(Ordering::Relaxed);
        let consumer = self
            .consumer_error
            .lock()
            .expect("health poisoned: bug")
            .as_ref()
            .filter(|(_, at)| failed || at.elapsed() < CONSUMER_ERROR_TTL)
            .map(|(reason, _)| reason.clone());
        match (consumer, failed) {
            (Some(reason), _) => Some(reason),
            (None, true) => Some("a pipeline stage failed".into()),
            (None, false) => None,
        }
    }

    pub fn is_live(&self) -> bool {
        self.problem().is_none()
    }

    /// Model loaded, consumer in its group, not draining.
    pub fn is_ready(&self) -> bool {
        self.is_live()
            && self.model_loaded.load(Ordering::Relaxed)
            && self.in_group.load(Ordering::Relaxed)
            && !self.draining.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumer_errors_fail_health_and_say_why() {
        let h = Health::default();
        assert_eq!(h.problem(), None);
        h.set_consumer_error("consumer not authorised: topic x".into(), false);
        assert_eq!(
            h.problem().as_deref(),
            Some("consumer not authorised: topic x")
        );
        assert!(
            !h.failed.load(Ordering::Relaxed),
            "not fatal: clears after a minute"
        );
        h.set_consumer_error("fatal consumer error: fenced".into(), true);
        assert!(!h.is_live());
    }
}
