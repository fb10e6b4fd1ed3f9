//! offsets: which consumed records are still in flight, per partition, and therefore which
//! offset may be stored for commit. The source registers each record (in offset order) before
//! dispatching it; the sink acknowledges it once every output is delivered. The committable
//! offset of a partition is its lowest in-flight offset, or one past the last consumed record
//! when nothing is in flight — never past a record whose outputs are not all acknowledged.
//! It also counts the key and value bytes in flight, for the source's byte budget.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

type Key = (Arc<str>, i32);

#[derive(Default)]
struct Partition {
    /// Offset → key and value bytes held for it.
    in_flight: BTreeMap<i64, usize>,
    /// One past the highest offset registered.
    end: i64,
    /// The last committable offset reported, so each advance is reported once.
    reported: i64,
}

impl Partition {
    fn committable(&self) -> i64 {
        self.in_flight
            .first_key_value()
            .map_or(self.end, |(offset, _)| *offset)
    }
}

#[derive(Default)]
struct State {
    partitions: HashMap<Key, Partition>,
    total: usize,
    bytes: usize,
    /// Exactly-once mode: records were forgotten while in flight (their outputs may be in the
    /// open transaction without their offsets), so that transaction must be aborted.
    poisoned: bool,
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

    /// Registers a consumed record, holding `bytes` of key and value, as in flight.
    pub fn register(&self, topic: &Arc<str>, partition: i32, offset: i64, bytes: usize) {
        let mut s = self.lock();
        let p = s.partitions.entry((topic.clone(), partition)).or_default();
        if p.in_flight.is_empty() && p.end == 0 {
            p.reported = offset;
        }
        if p.in_flight.insert(offset, bytes).is_none() {
            p.end = p.end.max(offset + 1);
            s.total += 1;
            s.bytes += bytes;
        }
    }

    /// Takes back the registration of the partition's last registered record (it did not
    /// enter the pipeline after all): the partition's end is that record again.
    pub fn unregister(&self, topic: &Arc<str>, partition: i32, offset: i64) {
        let mut s = self.lock();
        let Some(p) = s.partitions.get_mut(&(topic.clone(), partition)) else {
            return;
        };
        let Some(bytes) = p.in_flight.remove(&offset) else {
            return;
        };
        debug_assert_eq!(p.end, offset + 1, "only the last registered record: bug");
        p.end = offset;
        s.total -= 1;
        s.bytes -= bytes;
        drop(s);
        self.changed.notify_all();
    }

    /// Marks a record done. Returns the partition's new committable offset if it advanced.
    pub fn acknowledge(&self, topic: &Arc<str>, partition: i32, offset: i64) -> Option<i64> {
        let mut s = self.lock();
        let key = (topic.clone(), partition);
        let p = s.partitions.get_mut(&key)?;
        let Some(bytes) = p.in_flight.remove(&offset) else {
            return None; // forgotten after a revoke: the new owner reprocesses it
        };
        let next = p.committable();
        let advanced = (next > p.reported).then(|| {
            p.reported = next;
            next
        });
        s.total -= 1;
        s.bytes -= bytes;
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

    /// Key and value bytes in flight across all partitions.
    pub fn in_flight_bytes(&self) -> usize {
        self.lock().bytes
    }

    /// Waits until fewer than `count` records and `bytes` bytes are in flight; false on
    /// timeout. (One record over the byte budget still fits when nothing else is in flight.)
    pub fn wait_below(&self, count: usize, bytes: usize, timeout: Duration) -> bool {
        let full = |s: &mut State| s.total >= count || s.bytes >= bytes;
        let s = self.lock();
        let (mut s, _) = self
            .changed
            .wait_timeout_while(s, timeout, full)
            .expect("offset tracker poisoned: bug");
        !full(&mut s)
    }

    /// Takes the mark set by [`OffsetTracker::forget`] when it dropped in-flight records.
    pub fn take_poisoned(&self) -> bool {
        std::mem::take(&mut self.lock().poisoned)
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

    /// Every partition with anything registered (for [`OffsetTracker::forget`] at shutdown).
    pub fn partitions(&self) -> Vec<(String, i32)> {
        self.lock()
            .partitions
            .keys()
            .map(|(t, p)| (t.to_string(), *p))
            .collect()
    }

    /// Drops revoked partitions; their late acknowledgements are ignored. Returns how many
    /// records were still in flight; with `poison`, any such record marks the tracker
    /// poisoned (see [`OffsetTracker::take_poisoned`]).
    pub fn forget(&self, partitions: &[(String, i32)], poison: bool) -> usize {
        let mut s = self.lock();
        let mut dropped = 0;
        for (t, p) in partitions {
            if let Some(part) = s.partitions.remove(&(Arc::from(t.as_str()), *p)) {
                dropped += part.in_flight.len();
                s.total -= part.in_flight.len();
                s.bytes -= part.in_flight.values().sum::<usize>();
            }
        }
        s.poisoned |= poison && dropped > 0;
        drop(s);
        self.changed.notify_all();
        dropped
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
            tr.register(&t(), 0, o, 1);
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
        tr.register(&t(), 0, 5, 1);
        tr.register(&t(), 0, 9, 1); // compacted gap 6..8
        tr.register(&t(), 1, 0, 1);
        assert_eq!(tr.acknowledge(&t(), 1, 0), Some(1));
        assert_eq!(tr.acknowledge(&t(), 0, 5), Some(9));
        assert_eq!(tr.acknowledge(&t(), 0, 9), Some(10));
    }

    #[test]
    fn forgotten_partitions_ignore_late_acks_and_free_capacity() {
        let tr = OffsetTracker::new();
        tr.register(&t(), 0, 1, 1);
        tr.register(&t(), 1, 1, 1);
        assert_eq!(tr.forget(&[("in".into(), 0)], false), 1);
        assert_eq!(tr.in_flight(), 1);
        assert!(
            !tr.take_poisoned(),
            "at-least-once: the new owner reprocesses"
        );
        assert_eq!(tr.acknowledge(&t(), 0, 1), None);
        assert!(tr.drain(Some(&[("in".into(), 0)]), Duration::ZERO));
        assert!(!tr.drain(None, Duration::from_millis(1)));
    }

    #[test]
    fn drain_returns_once_another_thread_acknowledges() {
        let tr = Arc::new(OffsetTracker::new());
        tr.register(&t(), 0, 1, 1);
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
    fn an_unregistered_record_is_not_passed_by_the_committable_offset() {
        let tr = OffsetTracker::new();
        tr.register(&t(), 0, 4, 1);
        tr.register(&t(), 0, 5, 1);
        tr.unregister(&t(), 0, 5);
        assert_eq!(
            tr.acknowledge(&t(), 0, 4),
            Some(5),
            "not 6: offset 5 is not done"
        );
        assert_eq!(tr.in_flight(), 0);
    }

    #[test]
    fn counts_bytes_in_flight_and_waits_below_both_budgets() {
        let tr = OffsetTracker::new();
        tr.register(&t(), 0, 1, 600);
        assert!(tr.wait_below(10, 1000, Duration::ZERO));
        tr.register(&t(), 0, 2, 600);
        assert_eq!(tr.in_flight_bytes(), 1200);
        assert!(
            !tr.wait_below(10, 1000, Duration::ZERO),
            "over the byte budget"
        );
        assert!(
            !tr.wait_below(2, 10_000, Duration::ZERO),
            "at the count limit"
        );
        tr.acknowledge(&t(), 0, 1);
        assert!(tr.wait_below(10, 1000, Duration::ZERO));
        tr.forget(&[("in".into(), 0)], false);
        assert_eq!(tr.in_flight_bytes(), 0);
    }

    #[test]
    fn forgetting_in_flight_records_poisons_an_exactly_once_transaction() {
        let tr = OffsetTracker::new();
        tr.register(&t(), 0, 1, 1);
        tr.register(&t(), 1, 1, 1);
        tr.acknowledge(&t(), 1, 1);
        assert_eq!(tr.forget(&[("in".into(), 1)], true), 0);
        assert!(!tr.take_poisoned(), "nothing of partition 1 was in flight");
        assert_eq!(tr.forget(&[("in".into(), 0)], true), 1);
        assert!(tr.take_poisoned());
        assert!(!tr.take_poisoned(), "taken once");
    }

    #[test]
    fn drain_waits_for_a_commit_hold() {
        let tr = Arc::new(OffsetTracker::new());
        tr.register(&t(), 0, 1, 1);
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
