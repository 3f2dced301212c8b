//! A few OS threads, each driving its own single-threaded tokio runtime, to spread many
//! simulated nodes over the machine's cores (the workspace builds tokio without the
//! multi-threaded scheduler). A task stays on the runtime it was spawned on.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// The threads and their runtimes.
pub struct Pool {
    handles: Vec<Handle>,
    stops: Vec<oneshot::Sender<()>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    next: AtomicUsize,
}

impl Pool {
    /// `n` threads named `name-i`.
    pub fn new(n: usize, name: &str) -> anyhow::Result<Self> {
        let mut handles = Vec::new();
        let mut stops = Vec::new();
        let mut threads = Vec::new();
        for i in 0..n.max(1) {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            handles.push(rt.handle().clone());
            let (tx, rx) = oneshot::channel::<()>();
            stops.push(tx);
            threads.push(
                std::thread::Builder::new()
                    .name(format!("{name}-{i}"))
                    .spawn(move || {
                        rt.block_on(async move {
                            let _ = rx.await;
                        });
                        // Dropping the runtime cancels the tasks left on it.
                        drop(rt);
                    })?,
            );
        }
        Ok(Self {
            handles,
            stops,
            threads,
            next: AtomicUsize::new(0),
        })
    }

    /// Spawns `fut` on the next runtime (round robin).
    pub fn spawn<F>(&self, fut: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        self.handles[i].spawn(fut)
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        for s in self.stops.drain(..) {
            let _ = s.send(());
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
