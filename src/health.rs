//! health: the process state behind `/healthz` and `/readyz`.

use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Default)]
pub struct Health {
    model_loaded: AtomicBool,
    in_group: AtomicBool,
    draining: AtomicBool,
    failed: AtomicBool,
}

impl Health {
    pub fn set_model_loaded(&self) {
        self.model_loaded.store(true, Ordering::Relaxed);
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

    pub fn is_live(&self) -> bool {
        !self.failed.load(Ordering::Relaxed)
    }

    /// Model loaded, consumer in its group, not draining.
    pub fn is_ready(&self) -> bool {
        self.is_live()
            && self.model_loaded.load(Ordering::Relaxed)
            && self.in_group.load(Ordering::Relaxed)
            && !self.draining.load(Ordering::Relaxed)
    }
}
