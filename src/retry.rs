//! retry: what the stages do when a dependency fails (Schema Registry, the model, the output
//! registry) rather than the record. Such a failure never dead-letters a record: the stage
//! retries with exponential backoff while the source keeps polling (the affected partitions
//! paused), and when the failure outlasts `--retry-timeout-ms` it reports a [`Fatal`] error:
//! the worker stops fetching, commits what is safe and exits non-zero, as for an undeliverable
//! output.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;

/// Exponential backoff from 100 ms, doubling up to 5 s, until a deadline.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    deadline: Instant,
}

const FIRST: Duration = Duration::from_millis(100);
const MAX: Duration = Duration::from_secs(5);

impl Backoff {
    /// Starts now; gives up `timeout` from now.
    pub fn new(timeout: Duration) -> Backoff {
        Backoff {
            next: FIRST,
            deadline: Instant::now() + timeout,
        }
    }

    /// The wait before the next attempt, or `None` once the deadline has passed (never
    /// waiting past it by more than one step).
    pub fn next_delay(&mut self) -> Option<Duration> {
        let now = Instant::now();
        if now >= self.deadline {
            return None;
        }
        let delay = self
            .next
            .min(self.deadline - now)
            .max(Duration::from_millis(1));
        self.next = (self.next * 2).min(MAX);
        Some(delay)
    }
}

/// Reports a failure that retrying did not fix; the worker stops on the first one.
#[derive(Clone, Debug)]
pub struct Fatal(mpsc::UnboundedSender<String>);

/// The worker's end of [`Fatal`].
pub type FatalReceiver = mpsc::UnboundedReceiver<String>;

impl Fatal {
    pub fn channel() -> (Fatal, FatalReceiver) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Fatal(tx), rx)
    }

    /// Logs and reports `reason` (which must carry no customer data).
    pub fn report(&self, reason: String) {
        tracing::error!(reason = %reason, "giving up: stopping the worker");
        let _ = self.0.send(reason);
    }
}

/// How stages handle dependency failures: retry for `timeout`, then report to `fatal` (or, in
/// the one-shot commands that have no worker to stop, fail the records).
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    pub timeout: Duration,
    pub fatal: Option<Fatal>,
}

impl Default for RetryPolicy {
    /// The one-shot commands (`classify`, `bench`): a few seconds, then the records fail.
    fn default() -> RetryPolicy {
        RetryPolicy {
            timeout: Duration::from_secs(5),
            fatal: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_stops_at_the_deadline() {
        let mut b = Backoff::new(Duration::from_secs(3600));
        let delays: Vec<_> = (0..8).map(|_| b.next_delay().unwrap()).collect();
        assert_eq!(delays[0], Duration::from_millis(100));
        assert_eq!(delays[1], Duration::from_millis(200));
        assert_eq!(delays[7], MAX);
        let mut done = Backoff::new(Duration::ZERO);
        assert_eq!(done.next_delay(), None);
    }
}
