//! draft: the threads that draft replies (`draft-<i>`). The post stage hands each round over in
//! chunks, in input order; the threads work on several chunks at once and a forwarding task
//! passes the results on in the order the chunks were handed over, so the output keeps
//! per-partition (hence per-conversation) input order. Drafting costs tens of µs a message (see
//! the README's benchmarks): more than a core at GPU rates, so inline in the post task it would
//! be the pipeline's limit.

use std::sync::Arc;
use std::thread;

use tokio::sync::{mpsc, oneshot};

type Chunk<T, R> = (Vec<T>, oneshot::Sender<Vec<R>>);

/// Threads applying `work` to chunks of items, each chunk answered on its own oneshot.
pub(super) struct Pool<T, R> {
    chunks: crossbeam_channel::Sender<Chunk<T, R>>,
}

impl<T: Send + 'static, R: Send + 'static> Pool<T, R> {
    /// Starts `threads` (at least one) threads named `<name>-<i>`; they stop when the pool is
    /// dropped and the chunks already handed over are done.
    pub(super) fn spawn(
        threads: usize,
        name: &str,
        work: impl Fn(T) -> R + Send + Sync + 'static,
    ) -> Pool<T, R> {
        // Unbounded: what bounds it is the caller's ordered channel of pending answers.
        let (tx, rx) = crossbeam_channel::unbounded::<Chunk<T, R>>();
        let work = Arc::new(work);
        for i in 0..threads.max(1) {
            let (rx, work) = (rx.clone(), work.clone());
            thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || {
                    for (chunk, done) in rx {
                        // A closed receiver means the pipeline is shutting down.
                        let _ = done.send(chunk.into_iter().map(&*work).collect());
                    }
                })
                .expect("spawning a pool thread");
        }
        Pool { chunks: tx }
    }

    /// Queues `chunk`; its results arrive on the returned receiver (which fails if the thread
    /// working on it panicked).
    pub(super) fn submit(&self, chunk: Vec<T>) -> oneshot::Receiver<Vec<R>> {
        let (done, answer) = oneshot::channel();
        // Fails only when every thread has panicked; `done` is dropped with the error, so the
        // answer fails too.
        let _ = self.chunks.send((chunk, done));
        answer
    }
}

/// Passes each chunk's results to `output` in the order the chunks were queued on `pending`:
/// it waits for an earlier chunk even when later ones are done. Stops when `pending` closes (after
/// the last chunk), when `output` closes, or when a chunk's thread panicked (a bug: the output
/// closes, so the worker stops and the uncommitted records are reprocessed after the restart).
pub(super) async fn forward_in_order<R>(
    mut pending: mpsc::Receiver<oneshot::Receiver<Vec<R>>>,
    output: mpsc::Sender<R>,
) {
    while let Some(answer) = pending.recv().await {
        let Ok(items) = answer.await else {
            tracing::error!("a draft thread panicked (bug): stopping the pipeline's output");
            return;
        };
        for item in items {
            if output.send(item).await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[tokio::test]
    async fn forwards_chunks_in_queue_order_when_later_chunks_finish_first() {
        // Item 0 cannot finish until the last item has: its chunk completes last.
        let (last_done, wait_for_last) = std::sync::mpsc::channel::<()>();
        let (last_done, wait_for_last) = (Mutex::new(last_done), Mutex::new(wait_for_last));
        let n = 40u32;
        let pool = Pool::spawn(4, "test-draft", move |i: u32| {
            if i == 0 {
                wait_for_last
                    .lock()
                    .unwrap()
                    .recv()
                    .expect("the last item signals");
            }
            if i == n - 1 {
                last_done.lock().unwrap().send(()).unwrap();
            }
            i * 10
        });
        let (pending_tx, pending_rx) = mpsc::channel(64);
        let (out_tx, mut out_rx) = mpsc::channel(64);
        let forwarder = tokio::spawn(forward_in_order(pending_rx, out_tx));
        let items: Vec<u32> = (0..n).collect();
        for chunk in items.chunks(3) {
            pending_tx.send(pool.submit(chunk.to_vec())).await.unwrap();
        }
        drop((pending_tx, pool));
        let mut out = Vec::new();
        while let Some(r) = out_rx.recv().await {
            out.push(r);
        }
        forwarder.await.unwrap();
        assert_eq!(out, (0..n).map(|i| i * 10).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_panicking_chunk_closes_the_output() {
        let pool = Pool::spawn(2, "test-draft", |i: u32| {
            assert_ne!(i, 1, "induced panic");
            i
        });
        let (pending_tx, pending_rx) = mpsc::channel(8);
        let (out_tx, mut out_rx) = mpsc::channel(8);
        let forwarder = tokio::spawn(forward_in_order(pending_rx, out_tx));
        for chunk in [vec![0], vec![1], vec![2]] {
            pending_tx.send(pool.submit(chunk)).await.unwrap();
        }
        assert_eq!(out_rx.recv().await, Some(0));
        assert_eq!(out_rx.recv().await, None, "nothing after the lost chunk");
        forwarder.await.unwrap();
    }
}
