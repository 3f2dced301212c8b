//! Pipelined receiving: a link hands every verified arrival to the writer at once and keeps
//! reading, so the frames that arrive while one commit runs share the next one. Acks are
//! sent as arrivals finish, in arrival order, one cumulative ack for all that finished
//! together.

use crate::envelope::StreamId;
use crate::link::Frame;
use crate::writer::WriterError;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesOrdered;
use std::future::Future;

/// Work queued to the writer and not yet answered, oldest first.
pub struct Pipeline<T> {
    pending: FuturesOrdered<BoxFuture<'static, T>>,
}

impl<T> Default for Pipeline<T> {
    fn default() -> Self {
        Self {
            pending: FuturesOrdered::new(),
        }
    }
}

impl<T> Pipeline<T> {
    /// An empty pipeline.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds work (already queued to the writer, so its order is fixed) at the back.
    pub fn push(&mut self, work: impl Future<Output = T> + Send + 'static) {
        self.pending.push_back(Box::pin(work));
    }

    /// How much is waiting.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// True when nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Waits for the oldest work to finish, then takes every later one that finished too
    /// (in order). Cancel-safe: dropped before the oldest finished, nothing is lost.
    /// Never resolves while empty.
    pub async fn finished(&mut self) -> Vec<T> {
        if self.pending.is_empty() {
            return std::future::pending().await;
        }
        let mut out = Vec::new();
        if let Some(first) = self.pending.next().await {
            out.push(first);
        }
        while let Some(Some(more)) = futures_util::FutureExt::now_or_never(self.pending.next()) {
            out.push(more);
        }
        out
    }
}

/// The cumulative acks owed for a batch of finished arrivals: the highest position per
/// stream, streams in the order first seen.
#[derive(Default)]
pub struct Acks(Vec<(StreamId, u64)>);

impl Acks {
    /// Notes that `stream` is stored up to `upto`.
    pub fn note(&mut self, stream: StreamId, upto: u64) {
        match self.0.iter_mut().find(|(s, _)| *s == stream) {
            Some((_, u)) => *u = (*u).max(upto),
            None => self.0.push((stream, upto)),
        }
    }

    /// One ack frame per stream.
    pub fn frames(self) -> Vec<Frame> {
        self.0
            .into_iter()
            .map(|(stream, upto)| Frame::Ack { stream, upto })
            .collect()
    }
}

/// One cumulative ack per stream for arrivals whose commit finished, each given as the
/// stream and the position it is stored up to; the first failed commit is the error.
pub fn acks_for(
    done: Vec<Result<(StreamId, u64), WriterError>>,
) -> Result<Vec<Frame>, WriterError> {
    let mut acks = Acks::default();
    for arrival in done {
        let (stream, upto) = arrival?;
        acks.note(stream, upto);
    }
    Ok(acks.frames())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::oneshot;

    #[tokio::test]
    async fn finishes_in_order_and_batches_what_is_ready() {
        let mut p = Pipeline::new();
        let (tx1, rx1) = oneshot::channel::<u32>();
        let (tx2, rx2) = oneshot::channel::<u32>();
        let (tx3, rx3) = oneshot::channel::<u32>();
        for rx in [rx1, rx2, rx3] {
            p.push(async move { rx.await.unwrap_or(0) });
        }
        // The later ones finish first: nothing comes out before the oldest.
        tx3.send(3).ok();
        tx2.send(2).ok();
        let early = tokio::time::timeout(std::time::Duration::from_millis(20), p.finished()).await;
        assert!(early.is_err(), "nothing before the oldest finished");
        tx1.send(1).ok();
        assert_eq!(p.finished().await, vec![1, 2, 3]);
        assert!(p.is_empty());
        let idle = tokio::time::timeout(std::time::Duration::from_millis(20), p.finished()).await;
        assert!(idle.is_err(), "an empty pipeline waits");
    }
}
