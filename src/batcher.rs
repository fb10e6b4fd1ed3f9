//! batcher: the dynamic batching queue between tokenization and the model thread. A batch is
//! cut when it is full — by message count, or by padded tokens (`count × longest`, which is what
//! the model pays) — or when its oldest message has waited `max_wait`. The driver keeps filling
//! the next batch while the model runs the current one (the output channel holds one batch:
//! that is the prefetch), and stops receiving when its queue is full (backpressure).

use std::collections::VecDeque;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

/// Anything the batcher can size: its token count.
pub trait Tokens {
    fn tokens(&self) -> usize;
}

#[derive(Debug, Clone, Copy)]
pub struct BatchPolicy {
    pub max_batch_size: usize,
    pub max_batch_tokens: usize,
    pub max_wait: Duration,
}

/// A cut batch and how long its oldest message waited in the queue.
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

/// The FIFO queue and its cutting rules, separate from the async driver so tests can drive it.
pub struct Queue<T> {
    policy: BatchPolicy,
    items: VecDeque<(T, Instant)>,
}

impl<T: Tokens> Queue<T> {
    pub fn new(policy: BatchPolicy) -> Queue<T> {
        Queue {
            policy,
            items: VecDeque::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn push(&mut self, item: T, now: Instant) {
        self.items.push_back((item, now));
    }

    /// How many queued items the next batch takes: the longest FIFO prefix within both caps
    /// (at least one, so an over-long item still gets a batch of its own).
    fn head_batch_len(&self) -> usize {
        let mut max_len = 0;
        for (n, (item, _)) in self.items.iter().enumerate() {
            let len = max_len.max(item.tokens().max(1));
            if n == self.policy.max_batch_size
                || (n > 0 && (n + 1) * len > self.policy.max_batch_tokens)
            {
                return n;
            }
            max_len = len;
        }
        self.items.len()
    }

    /// The head batch cannot grow: the next item would not fit, or the size cap is reached.
    pub fn is_full(&self) -> bool {
        !self.items.is_empty() && self.head_batch_len() < self.items.len()
            || self.head_batch_len() >= self.policy.max_batch_size
    }

    /// When the oldest item's wait runs out.
    pub fn deadline(&self) -> Option<Instant> {
        self.items.front().map(|(_, at)| *at + self.policy.max_wait)
    }

    pub fn is_ready(&self, now: Instant) -> bool {
        self.is_full() || self.deadline().is_some_and(|d| d <= now)
    }

    /// Takes the head batch.
    pub fn cut(&mut self, now: Instant) -> Batch<T> {
        let n = self.head_batch_len();
        let mut items = Vec::with_capacity(n);
        let mut queue_waits = Vec::with_capacity(n);
        let mut max_len = 0;
        for (item, at) in self.items.drain(..n) {
            max_len = max_len.max(item.tokens());
            queue_waits.push(now.saturating_duration_since(at));
            items.push(item);
        }
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
    // Room for the batch being filled plus the next one; beyond that, upstream waits.
    let capacity = policy.max_batch_size * 2;
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
            item = input.recv(), if !closed && queue.len() < capacity => match item {
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
    async fn cuts_at_padded_token_budget() {
        // 4 × 30 = 120 > 100: the padded cost, not the sum (10+10+10+30 = 60), decides.
        let (in_tx, in_rx) = mpsc::channel(16);
        let (out_tx, mut out_rx) = mpsc::channel(1);
        tokio::spawn(run(policy(10, 100, 50), in_rx, out_tx));
        for (i, t) in [10, 10, 10, 30].into_iter().enumerate() {
            in_tx.send(Item(i, t)).await.unwrap();
        }
        let batch = out_rx.recv().await.unwrap();
        assert_eq!(ids(&batch), vec![0, 1, 2]);
        assert_eq!(batch.padded_tokens(), 30);
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
            in_tx.send(Item(i, 1)).await.unwrap();
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
        assert_eq!(
            seen,
            (0..7).collect::<Vec<_>>(),
            "everything queued is flushed in order"
        );
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
