//! offsets: which consumed records are still in flight, per partition, and therefore which
//! offset may be stored for commit. The source registers each record (in offset order) before
//! dispatching it; the sink acknowledges it once every output is delivered. The committable
//! offset of a partition is its lowest in-flight offset, or one past the last consumed record
//! when nothing is in flight — never past a record whose outputs are not all acknowledged.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

type Key = (Arc<str>, i32);

#[derive(Default)]
struct Partition {
    in_flight: BTreeSet<i64>,
    /// One past the highest offset registered.
    end: i64,
    /// The last committable offset reported, so each advance is reported once.
    reported: i64,
}

impl Partition {
    fn committable(&self) -> i64 {
        self.in_flight.first().copied().unwrap_or(self.end)
    }
}

#[derive(Default)]
struct State {
    partitions: HashMap<Key, Partition>,
    total: usize,
    /// Open [`CommitHold`]s: acknowledged offsets not yet committed (exactly-once mode).
    holds: usize,
}

/// Shared by the source (register, drain), the sink (acknowledge) and the rebalance callback.
#[derive(Default)]
pub struct OffsetTracker {
    state: Mutex<State>,
    changed: Condvar,
}

impl OffsetTracker {
    pub fn new() -> OffsetTracker {
        OffsetTracker::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("offset tracker poisoned: bug")
    }

    /// Registers a consumed record as in flight.
    pub fn register(&self, topic: &Arc<str>, partition: i32, offset: i64) {
        let mut s = self.lock();
        let p = s.partitions.entry((topic.clone(), partition)).or_default();
        if p.in_flight.is_empty() && p.end == 0 {
            p.reported = offset;
        }
        if p.in_flight.insert(offset) {
            p.end = p.end.max(offset + 1);
            s.total += 1;
        }
    }

    /// Marks a record done. Returns the partition's new committable offset if it advanced.
    pub fn acknowledge(&self, topic: &Arc<str>, partition: i32, offset: i64) -> Option<i64> {
        let mut s = self.lock();
        let key = (topic.clone(), partition);
        let p = s.partitions.get_mut(&key)?;
        if !p.in_flight.remove(&offset) {
            return None; // forgotten after a revoke: the new owner reprocesses it
        }
        let next = p.committable();
        let advanced = (next > p.reported).then(|| {
            p.reported = next;
            next
        });
        s.total -= 1;
        drop(s);
        self.changed.notify_all();
        advanced
    }

    /// Makes `drain` wait until the returned guard drops. Exactly-once mode acknowledges
    /// records only while committing their transaction, under a hold, so a revoke (which
    /// drains) returns only once their offsets are committed, never between.
    pub fn hold(&self) -> CommitHold<'_> {
        self.lock().holds += 1;
        CommitHold { tracker: self }
    }

    /// Records in flight across all partitions.
    pub fn in_flight(&self) -> usize {
        self.lock().total
    }

    /// Waits until fewer than `limit` records are in flight; false on timeout.
    pub fn wait_below(&self, limit: usize, timeout: Duration) -> bool {
        let s = self.lock();
        let (s, _) = self
            .changed
            .wait_timeout_while(s, timeout, |s| s.total >= limit)
            .expect("offset tracker poisoned: bug");
        s.total < limit
    }

    /// Waits until the given partitions (all, if `None`) have nothing in flight; false on timeout.
    pub fn drain(&self, partitions: Option<&[(String, i32)]>, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let busy = |s: &State| match partitions {
            _ if s.holds > 0 => true,
            None => s.total > 0,
            Some(list) => s.partitions.iter().any(|((t, p), part)| {
                !part.in_flight.is_empty() && list.iter().any(|(lt, lp)| **t == **lt && p == lp)
            }),
        };
        let mut s = self.lock();
        while busy(&s) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            s = self
                .changed
                .wait_timeout(s, left)
                .expect("offset tracker poisoned: bug")
                .0;
        }
        true
    }

    /// Committable offsets of the given partitions (for the commit on revoke).
    pub fn committable(&self, partitions: &[(String, i32)]) -> Vec<(String, i32, i64)> {
        let s = self.lock();
        partitions
            .iter()
            .filter_map(|(t, p)| {
                let part = s.partitions.get(&(Arc::from(t.as_str()), *p))?;
                (part.end > 0).then(|| (t.clone(), *p, part.committable()))
            })
            .collect()
    }

    /// Drops revoked partitions; their late acknowledgements are ignored.
    pub fn forget(&self, partitions: &[(String, i32)]) {
        let mut s = self.lock();
        for (t, p) in partitions {
            if let Some(part) = s.partitions.remove(&(Arc::from(t.as_str()), *p)) {
                s.total -= part.in_flight.len();
            }
        }
        drop(s);
        self.changed.notify_all();
    }
}

/// See [`OffsetTracker::hold`].
pub struct CommitHold<'a> {
    tracker: &'a OffsetTracker,
}

impl Drop for CommitHold<'_> {
    fn drop(&mut self) {
        self.tracker.lock().holds -= 1;
        self.tracker.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> Arc<str> {
        Arc::from("in")
    }

    #[test]
    fn never_commits_past_an_unacknowledged_record() {
        let tr = OffsetTracker::new();
        for o in 10..13 {
            tr.register(&t(), 0, o);
        }
        assert_eq!(tr.acknowledge(&t(), 0, 11), None, "10 is still in flight");
        assert_eq!(tr.acknowledge(&t(), 0, 12), None);
        assert_eq!(
            tr.acknowledge(&t(), 0, 10),
            Some(13),
            "all done: one past the last"
        );
        assert_eq!(tr.in_flight(), 0);
    }

    #[test]
    fn partitions_advance_independently_and_gaps_are_skipped() {
        let tr = OffsetTracker::new();
        tr.register(&t(), 0, 5);
        tr.register(&t(), 0, 9); // compacted gap 6..8
        tr.register(&t(), 1, 0);
        assert_eq!(tr.acknowledge(&t(), 1, 0), Some(1));
        assert_eq!(tr.acknowledge(&t(), 0, 5), Some(9));
        assert_eq!(tr.acknowledge(&t(), 0, 9), Some(10));
    }

    #[test]
    fn forgotten_partitions_ignore_late_acks_and_free_capacity() {
        let tr = OffsetTracker::new();
        tr.register(&t(), 0, 1);
        tr.register(&t(), 1, 1);
        tr.forget(&[("in".into(), 0)]);
        assert_eq!(tr.in_flight(), 1);
        assert_eq!(tr.acknowledge(&t(), 0, 1), None);
        assert!(tr.drain(Some(&[("in".into(), 0)]), Duration::ZERO));
        assert!(!tr.drain(None, Duration::from_millis(1)));
    }

    #[test]
    fn drain_returns_once_another_thread_acknowledges() {
        let tr = Arc::new(OffsetTracker::new());
        tr.register(&t(), 0, 1);
        let acker = {
            let tr = tr.clone();
            std::thread::spawn(move || tr.acknowledge(&t(), 0, 1))
        };
        assert!(tr.drain(None, Duration::from_secs(30)));
        assert_eq!(acker.join().unwrap(), Some(2));
        assert_eq!(
            tr.committable(&[("in".into(), 0)]),
            vec![("in".to_string(), 0, 2)]
        );
    }

    #[test]
    fn drain_waits_for_a_commit_hold() {
        let tr = Arc::new(OffsetTracker::new());
        tr.register(&t(), 0, 1);
        let hold = tr.hold();
        assert_eq!(tr.acknowledge(&t(), 0, 1), Some(2));
        assert!(
            !tr.drain(None, Duration::from_millis(1)),
            "acknowledged but not yet committed"
        );
        drop(hold);
        assert!(tr.drain(None, Duration::ZERO));
    }
}
