//! batcher: the dynamic batching queue between tokenization and the model threads. The model
//! pays for `count × longest` tokens, so a batch groups messages of similar length: the oldest
//! queued message anchors it and takes the queued messages nearest its length, as long as every
//! one pads by at most a quarter of the longest (or 8 tokens). A batch is cut when it is full —
//! by message count, or by padded tokens — when the queue is full, or when its anchor has waited
//! `max_wait`; since the anchor is always the oldest message, none waits longer than that (while
//! the model keeps up), and long messages are never starved. Batches leave out of input order;
//! the post stage restores it. The driver keeps filling the next batch while the model runs the
//! current one (the output channel holds one batch: that is the prefetch), and stops receiving
//! when its queue is full (backpressure).

use std::collections::VecDeque;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

/// Anything the batcher can size: its token count.
pub trait Tokens {
    fn tokens(&self) -> usize;
}

impl<T: Tokens> Tokens for &T {
    fn tokens(&self) -> usize {
        (**self).tokens()
    }
}

#[derive(Debug, Clone, Copy)]
pub struct BatchPolicy {
    pub max_batch_size: usize,
    pub max_batch_tokens: usize,
    pub max_wait: Duration,
}

impl BatchPolicy {
    /// Messages the queue holds: two batches' worth, so there is a choice of lengths to group
    /// and the next batch is ready while the model runs the current one.
    pub fn queue_capacity(&self) -> usize {
        self.max_batch_size.max(1) * 2
    }
}

/// Most padding a message may get in a batch whose longest sequence is `max_len`.
fn padding_allowance(max_len: usize) -> usize {
    (max_len / 4).max(8)
}

/// A cut batch and how long each of its messages waited in the queue.
#[derive(Debug)]
pub struct Batch<T> {
    pub items: Vec<T>,
    /// Longest sequence: the batch is padded to this.
    pub max_len: usize,
    pub queue_waits: Vec<Duration>,
}

impl<T> Batch<T> {
    pub fn padded_tokens(&self) -> usize {
        self.items.len() * self.max_len
    }
}

/// The queue and its grouping and cutting rules, separate from the async driver so tests (and
/// `bench`) can drive it.
pub struct Queue<T> {
    policy: BatchPolicy,
    /// In arrival order: the front is the oldest, the next anchor.
    items: VecDeque<(T, Instant)>,
    // Scratch reused by every selection, so cutting allocates only the batch itself.
    spare: VecDeque<(T, Instant)>,
    /// Item indices by the distance of their length from the anchor's.
    by_distance: Vec<Vec<usize>>,
    /// How many queued items have each length, for the longest one without a scan.
    length_counts: Vec<usize>,
    order: Vec<usize>,
    chosen: Vec<bool>,
}

/// What the anchor's batch would be now.
struct Selection {
    count: usize,
    full: bool,
}

impl<T: Tokens> Queue<T> {
    pub fn new(policy: BatchPolicy) -> Queue<T> {
        Queue {
            policy,
            items: VecDeque::new(),
            spare: VecDeque::new(),
            by_distance: Vec::new(),
            length_counts: Vec::new(),
            order: Vec::new(),
            chosen: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Whether the queue takes another message; when not, upstream waits.
    pub fn has_room(&self) -> bool {
        self.items.len() < self.policy.queue_capacity()
    }

    pub fn push(&mut self, item: T, now: Instant) {
        let len = item.tokens().max(1);
        if len >= self.length_counts.len() {
            self.length_counts.resize(len + 1, 0);
        }
        self.length_counts[len] += 1;
        self.items.push_back((item, now));
    }

    fn longest(&self) -> usize {
        self.length_counts.iter().rposition(|&n| n > 0).unwrap_or(0)
    }

    /// Marks the anchor's batch in `chosen`: the oldest message, then the others by distance
    /// from its length (ties: older first), each if the batch stays within the size cap, the
    /// padded-token budget and the padding allowance.
    fn select(&mut self) -> Selection {
        let p = self.policy;
        let len = |i: usize| self.items[i].0.tokens().max(1);
        self.chosen.clear();
        self.chosen.resize(self.items.len(), false);
        if self.items.is_empty() {
            return Selection {
                count: 0,
                full: false,
            };
        }
        let anchor = len(0);
        // By distance from the anchor's length, older first at equal distance. A counting sort
        // (lengths are bounded by the sequence length): this runs for every arriving message,
        // and a comparison sort of a full queue made the batcher the pipeline's limit on a GPU.
        for bucket in &mut self.by_distance {
            bucket.clear();
        }
        for i in 0..self.items.len() {
            let distance = len(i).abs_diff(anchor);
            if distance >= self.by_distance.len() {
                self.by_distance.resize_with(distance + 1, Vec::new);
            }
            self.by_distance[distance].push(i);
        }
        self.order.clear();
        for bucket in &self.by_distance {
            self.order.extend_from_slice(bucket);
        }
        let (mut count, mut min, mut max) = (0, anchor, anchor);
        for &i in &self.order {
            if count == p.max_batch_size {
                break;
            }
            let (lo, hi) = (min.min(len(i)), max.max(len(i)));
            // The anchor always goes, even alone over the budget.
            let fits = i == 0
                || ((count + 1) * hi <= p.max_batch_tokens && hi - lo <= padding_allowance(hi));
            if fits {
                self.chosen[i] = true;
                (count, min, max) = (count + 1, lo, hi);
            }
        }
        Selection {
            count,
            full: count >= p.max_batch_size || (count + 1) * max > p.max_batch_tokens,
        }
    }

    /// The anchor's batch cannot grow: the size cap is reached, or one more message of any
    /// length would break the token budget.
    pub fn is_full(&mut self) -> bool {
        // No selection can be full while the whole queue, padded to its longest item, plus one
        // more would fit: skips the selection for most arrivals.
        let n = self.items.len();
        if n < self.policy.max_batch_size
            && (n + 1) * self.longest() <= self.policy.max_batch_tokens
        {
            return false;
        }
        self.select().full
    }

    /// When the oldest item's wait runs out.
    pub fn deadline(&self) -> Option<Instant> {
        self.items.front().map(|(_, at)| *at + self.policy.max_wait)
    }

    pub fn is_ready(&mut self, now: Instant) -> bool {
        !self.is_empty()
            && (!self.has_room() || self.deadline().is_some_and(|d| d <= now) || self.is_full())
    }

    /// Takes the anchor's batch; the rest stay queued in arrival order.
    pub fn cut(&mut self, now: Instant) -> Batch<T> {
        let n = self.select().count;
        let mut items = Vec::with_capacity(n);
        let mut queue_waits = Vec::with_capacity(n);
        let mut max_len = 0;
        let mut all = std::mem::replace(&mut self.items, std::mem::take(&mut self.spare));
        for (i, (item, at)) in all.drain(..).enumerate() {
            if self.chosen[i] {
                self.length_counts[item.tokens().max(1)] -= 1;
                max_len = max_len.max(item.tokens());
                queue_waits.push(now.saturating_duration_since(at));
                items.push(item);
            } else {
                self.items.push_back((item, at));
            }
        }
        self.spare = all;
        Batch {
            items,
            max_len,
            queue_waits,
        }
    }
}

/// Moves items from `input` into batches on `output` until `input` closes, then flushes what
/// is queued and returns (closing `output`).
pub async fn run<T: Tokens + Send>(
    policy: BatchPolicy,
    mut input: mpsc::Receiver<T>,
    output: mpsc::Sender<Batch<T>>,
) {
    let mut queue = Queue::new(policy);
    let mut closed = false;
    loop {
        let now = Instant::now();
        let ready = queue.is_ready(now) || (closed && !queue.is_empty());
        let deadline = queue.deadline().unwrap_or(now);
        tokio::select! {
            biased;
            permit = output.reserve(), if ready => match permit {
                Ok(permit) => permit.send(queue.cut(Instant::now())),
                Err(_) => return, // the model stage is gone: shutting down
            },
            item = input.recv(), if !closed && queue.has_room() => match item {
                Some(item) => queue.push(item, Instant::now()),
                None => closed = true,
            },
            _ = tokio::time::sleep_until(deadline), if !ready && !queue.is_empty() => {}
            else => {}
        }
        if closed && queue.is_empty() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct Item(usize, usize); // (id, tokens)
    impl Tokens for Item {
        fn tokens(&self) -> usize {
            self.1
        }
    }

    fn policy(size: usize, tokens: usize, wait_ms: u64) -> BatchPolicy {
        BatchPolicy {
            max_batch_size: size,
            max_batch_tokens: tokens,
            max_wait: Duration::from_millis(wait_ms),
        }
    }

    fn ids(batch: &Batch<Item>) -> Vec<usize> {
        batch.items.iter().map(|i| i.0).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn cuts_at_size_cap_without_waiting() {
        let (in_tx, in_rx) = mpsc::channel(16);
        let (out_tx, mut out_rx) = mpsc::channel(1);
        tokio::spawn(run(policy(3, 1000, 50), in_rx, out_tx));
        let start = Instant::now();
        for i in 0..4 {
            in_tx.send(Item(i, 10)).await.unwrap();
        }
        let batch = out_rx.recv().await.unwrap();
        assert_eq!(ids(&batch), vec![0, 1, 2]);
        assert_eq!(Instant::now(), start, "a full batch goes out at once");
        // the 4th waits for its deadline
        let batch = out_rx.recv().await.unwrap();
        assert_eq!(ids(&batch), vec![3]);
        assert_eq!(Instant::now() - start, Duration::from_millis(50));
    }

    #[tokio::test(start_paused = true)]
    async fn cuts_at_padded_token_budget_without_waiting() {
        // 4 × 30 = 120 > 100: the padded cost decides.
        let (in_tx, in_rx) = mpsc::channel(16);
        let (out_tx, mut out_rx) = mpsc::channel(1);
        tokio::spawn(run(policy(10, 100, 50), in_rx, out_tx));
        let start = Instant::now();
        for (i, t) in [30, 28, 30, 30].into_iter().enumerate() {
            in_tx.send(Item(i, t)).await.unwrap();
        }
        let batch = out_rx.recv().await.unwrap();
        assert_eq!(ids(&batch), vec![0, 1, 2]);
        assert_eq!(batch.padded_tokens(), 90);
        assert_eq!(Instant::now(), start, "a full batch goes out at once");
    }

    #[test]
    fn groups_similar_lengths_to_cut_padding() {
        // Arrival order alternates short and long: FIFO batches of 4 would pad everything to
        // 100 (800 padded tokens for 440 real ones).
        let mut q = Queue::new(policy(4, 10_000, 5));
        let now = Instant::now();
        for (i, t) in [10, 100, 12, 95, 9, 100, 10, 98].into_iter().enumerate() {
            q.push(Item(i, t), now);
        }
        let overdue = now + Duration::from_millis(5);
        let short = q.cut(overdue);
        assert_eq!(ids(&short), vec![0, 2, 4, 6]);
        let long = q.cut(overdue);
        assert_eq!(ids(&long), vec![1, 3, 5, 7]);
        assert_eq!(
            short.padded_tokens() + long.padded_tokens(),
            4 * 12 + 4 * 100
        );
        assert!(q.is_empty());
    }

    #[test]
    fn padding_stays_within_a_quarter_of_the_longest() {
        let mut q = Queue::new(policy(64, 10_000, 5));
        let now = Instant::now();
        for (i, t) in [40, 52, 31, 29, 50].into_iter().enumerate() {
            q.push(Item(i, t), now);
        }
        // Nearest to 40 first: 31 (pad 9 ≤ 10), 29 (pad 11 > 10: no), 50 (pad 19 > 12: no) …
        assert_eq!(ids(&q.cut(now)), vec![0, 2]);
        // … they form the next batches.
        assert_eq!(ids(&q.cut(now)), vec![1, 4]);
        assert_eq!(ids(&q.cut(now)), vec![3]);
    }

    #[tokio::test(start_paused = true)]
    async fn partial_batch_leaves_at_deadline() {
        let (in_tx, in_rx) = mpsc::channel(16);
        let (out_tx, mut out_rx) = mpsc::channel(1);
        tokio::spawn(run(policy(8, 1000, 5), in_rx, out_tx));
        let start = Instant::now();
        in_tx.send(Item(0, 4)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
        in_tx.send(Item(1, 4)).await.unwrap();
        let batch = out_rx.recv().await.unwrap();
        assert_eq!(ids(&batch), vec![0, 1]);
        assert_eq!(
            Instant::now() - start,
            Duration::from_millis(5),
            "the oldest item's wait decides"
        );
        assert_eq!(
            batch.queue_waits,
            vec![Duration::from_millis(5), Duration::from_millis(3)]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn lone_long_message_leaves_at_its_deadline() {
        let (in_tx, in_rx) = mpsc::channel(16);
        let (out_tx, mut out_rx) = mpsc::channel(1);
        tokio::spawn(run(policy(4, 1000, 5), in_rx, out_tx));
        let start = Instant::now();
        in_tx.send(Item(0, 120)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
        // Short messages keep arriving and fill batches of their own …
        for i in 1..=4 {
            in_tx.send(Item(i, 10)).await.unwrap();
        }
        // … but the long one is the oldest: it goes first, alone, at its deadline.
        let batch = out_rx.recv().await.unwrap();
        assert_eq!(ids(&batch), vec![0]);
        assert_eq!(Instant::now() - start, Duration::from_millis(5));
        let batch = out_rx.recv().await.unwrap();
        assert_eq!(ids(&batch), vec![1, 2, 3, 4]);
        assert_eq!(Instant::now() - start, Duration::from_millis(5));
    }

    #[tokio::test(start_paused = true)]
    async fn no_message_is_lost_duplicated_or_kept_past_max_wait() {
        let (in_tx, in_rx) = mpsc::channel(8);
        let (out_tx, mut out_rx) = mpsc::channel(1);
        let max_wait = Duration::from_millis(3);
        tokio::spawn(run(policy(16, 640, 3), in_rx, out_tx));
        tokio::spawn(async move {
            let mut x: u64 = 7;
            for i in 0..2000 {
                // A long-tailed 5–128 token mix arriving in bursts.
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let r = (x >> 33) as usize;
                let t = if r.is_multiple_of(10) {
                    60 + r % 69
                } else {
                    5 + r % 40
                };
                in_tx.send(Item(i, t)).await.unwrap();
                if r.is_multiple_of(7) {
                    tokio::time::sleep(Duration::from_micros((r % 5000) as u64)).await;
                }
            }
        });
        let mut seen = Vec::new();
        while let Some(batch) = out_rx.recv().await {
            assert!(batch.items.len() <= 16);
            assert!(batch.items.len() == 1 || batch.padded_tokens() <= 640);
            assert!(
                batch.queue_waits.iter().all(|w| *w <= max_wait),
                "the model keeps up, so nobody waits past max_wait: {:?}",
                batch.queue_waits
            );
            seen.extend(ids(&batch));
        }
        seen.sort_unstable();
        assert_eq!(seen, (0..2000).collect::<Vec<_>>());
    }

    #[tokio::test(start_paused = true)]
    async fn prefetches_next_batch_while_model_is_busy() {
        let (in_tx, in_rx) = mpsc::channel(64);
        let (out_tx, mut out_rx) = mpsc::channel(1);
        tokio::spawn(run(policy(2, 1000, 1), in_rx, out_tx));
        for i in 0..6 {
            in_tx.send(Item(i, 4)).await.unwrap();
        }
        // The "model" has not taken anything yet: one batch waits in the channel and the batcher
        // holds the next one, full, ready the moment the model takes the first.
        tokio::time::sleep(Duration::from_millis(10)).await;
        let taken_at = Instant::now();
        assert_eq!(ids(&out_rx.recv().await.unwrap()), vec![0, 1]);
        assert_eq!(ids(&out_rx.recv().await.unwrap()), vec![2, 3]);
        assert_eq!(ids(&out_rx.recv().await.unwrap()), vec![4, 5]);
        assert_eq!(
            Instant::now(),
            taken_at,
            "prefetched batches wait for nothing"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn stops_receiving_when_full_and_flushes_on_close() {
        let (in_tx, in_rx) = mpsc::channel(1);
        let (out_tx, mut out_rx) = mpsc::channel(1);
        tokio::spawn(run(policy(2, 1000, 1000), in_rx, out_tx));
        // Output holds 1 batch, queue holds 2 × 2, input channel 1: the 8th send must wait.
        for i in 0..7 {
            in_tx.send(Item(i, 1 + i % 3)).await.unwrap();
        }
        let blocked =
            tokio::time::timeout(Duration::from_millis(5000), in_tx.send(Item(7, 1))).await;
        assert!(
            blocked.is_err(),
            "backpressure: upstream waits instead of the queue growing"
        );
        drop(in_tx);
        let mut seen = Vec::new();
        while let Some(batch) = out_rx.recv().await {
            seen.extend(ids(&batch));
        }
        seen.sort_unstable();
        assert_eq!(
            seen,
            (0..7).collect::<Vec<_>>(),
            "everything queued is flushed"
        );
    }

    /// The shortcut in `is_full` (skip the selection while everything fits) never disagrees
    /// with the selection itself, through pushes and cuts of varied lengths.
    #[test]
    fn fullness_shortcut_agrees_with_the_selection() {
        let now = Instant::now();
        for (size, tokens) in [(8, 64), (16, 1024), (4, 4096)] {
            let mut q = Queue::new(policy(size, tokens, 2));
            for i in 0..400 {
                q.push(Item(i, 1 + (i * 7919) % 97), now);
                assert_eq!(q.is_full(), q.select().full, "after push {i}");
                if i % 5 == 0 {
                    q.cut(now);
                    assert_eq!(q.is_full(), q.select().full, "after cut {i}");
                }
            }
        }
    }

    #[test]
    fn an_item_over_the_token_budget_gets_its_own_batch() {
        let mut q = Queue::new(policy(8, 100, 5));
        let now = Instant::now();
        q.push(Item(0, 500), now);
        q.push(Item(1, 5), now);
        assert!(q.is_full());
        assert_eq!(ids(&q.cut(now)), vec![0]);
        assert_eq!(ids(&q.cut(now)), vec![1]);
    }
}
