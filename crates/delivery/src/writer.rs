//! Group commit: one thread owns the [`DeliveryStore`]; callers hand it operations through a
//! cloneable [`Writer`]; it runs every operation queued behind the first in one transaction
//! and answers each caller only after that commit. On a disk where an fsync takes
//! milliseconds, throughput then grows with the number of concurrent callers instead of
//! collapsing to one message per fsync. "Accepted" (the answer to `enqueue`) always means
//! durable.

use crate::envelope::StreamId;
use crate::store::{Arrival, DeliveryStore, Receipt, StoreError};
use std::path::Path;
use std::sync::mpsc as std_mpsc;
use tokio::sync::oneshot;

type Reply<T> = oneshot::Sender<Result<T, String>>;
type AnyBox = Box<dyn std::any::Any + Send>;
type Job = Box<dyn FnOnce(&mut DeliveryStore) -> Result<AnyBox, StoreError> + Send>;
/// Runs in the writer thread right after the commit, before the caller is answered.
type After<T> = Box<dyn FnOnce(&T) + Send>;

enum Op {
    Enqueue {
        stream: StreamId,
        id: String,
        expires_at_ms: u64,
        seal: Box<dyn FnOnce(u64) -> Vec<u8> + Send>,
        reply: Reply<u64>,
    },
    Receive {
        stream: StreamId,
        seq: Option<u64>,
        id: Option<String>,
        envelope: Vec<u8>,
        reply: Reply<Receipt>,
        after: After<Receipt>,
    },
    Call {
        job: Job,
        reply: Reply<AnyBox>,
        after: After<AnyBox>,
    },
}

/// Handle to the writer thread. Cheap to clone.
#[derive(Clone)]
pub struct Writer {
    tx: std_mpsc::Sender<Op>,
}

/// Why the writer could not do it.
#[derive(Debug, thiserror::Error)]
pub enum WriterError {
    /// The operation failed and nothing of it was stored (why, with its causes).
    #[error("{0}")]
    Store(String),
    /// The writer thread is gone.
    #[error("the delivery writer has stopped")]
    Stopped,
}

impl Writer {
    /// Opens the store and starts the writer thread.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with_cache(path, None)
    }

    /// [`Writer::open`] with a page cache of `cache_kib` KiB for the writer's connection
    /// (None: SQLite's default, 2 MiB). A hub keeps its outbox, inbox and message records
    /// in the cache instead of reading their pages back from the kernel at every commit;
    /// an agent keeps the default (its memory counts).
    pub fn open_with_cache(path: &Path, cache_kib: Option<u32>) -> Result<Self, StoreError> {
        let store = DeliveryStore::open(path)?;
        if let Some(kib) = cache_kib {
            store
                .conn()
                .pragma_update(None, "cache_size", -i64::from(kib))
                .map_err(|source| StoreError::Sql {
                    what: "set the page cache",
                    source,
                })?;
        }
        let (tx, rx) = std_mpsc::channel();
        std::thread::Builder::new()
            .name("reeve-delivery".into())
            .spawn(move || run(store, rx))
            .map_err(|e| StoreError::Sql {
                what: "start writer thread",
                source: rusqlite::Error::ToSqlConversionFailure(Box::new(e)),
            })?;
        Ok(Self { tx })
    }

    async fn call<T>(
        &self,
        op: Op,
        rx: oneshot::Receiver<Result<T, String>>,
    ) -> Result<T, WriterError> {
        self.tx.send(op).map_err(|_| WriterError::Stopped)?;
        rx.await
            .map_err(|_| WriterError::Stopped)?
            .map_err(WriterError::Store)
    }

    /// Accepts a message (durable when this returns); returns its `seq`.
    pub async fn enqueue(
        &self,
        stream: StreamId,
        id: String,
        expires_at_ms: u64,
        seal: impl FnOnce(u64) -> Vec<u8> + Send + 'static,
    ) -> Result<u64, WriterError> {
        let (reply, rx) = oneshot::channel();
        let op = Op::Enqueue {
            stream,
            id,
            expires_at_ms,
            seal: Box::new(seal),
            reply,
        };
        self.call(op, rx).await
    }

    /// Stores a verified arrival; acknowledge with the receipt only after this returns.
    pub async fn receive(
        &self,
        stream: StreamId,
        seq: Option<u64>,
        id: Option<String>,
        envelope: Vec<u8>,
    ) -> Result<Receipt, WriterError> {
        self.receive_queued(stream, seq, id, envelope, |_| {}).await
    }

    /// Queues an arrival at once (in call order, before the first poll) and returns the
    /// future of its receipt: a receiver keeps reading while earlier arrivals commit, so a
    /// window of frames costs one commit instead of one each. Acknowledge only after the
    /// future resolved. `after` runs in the writer thread once the arrival committed, in
    /// commit order, even when the future was dropped (a link that broke meanwhile): what
    /// the arrival released must never wait for a link.
    pub fn receive_queued(
        &self,
        stream: StreamId,
        seq: Option<u64>,
        id: Option<String>,
        envelope: Vec<u8>,
        after: impl FnOnce(&Receipt) + Send + 'static,
    ) -> impl Future<Output = Result<Receipt, WriterError>> + Send + 'static {
        let (reply, rx) = oneshot::channel();
        let op = Op::Receive {
            stream,
            seq,
            id,
            envelope,
            reply,
            after: Box::new(after),
        };
        self.queue(op, rx)
    }

    /// [`Writer::run`], queued at once: jobs run in call order even when their futures are
    /// polled in another. `after` runs in the writer thread once the job committed, in
    /// commit order, even when the future was dropped.
    pub fn run_queued<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut DeliveryStore) -> Result<T, StoreError> + Send + 'static,
        after: impl FnOnce(&T) + Send + 'static,
    ) -> impl Future<Output = Result<T, WriterError>> + Send + 'static {
        let (reply, rx) = oneshot::channel();
        let job: Job = Box::new(move |s| f(s).map(|v| Box::new(v) as AnyBox));
        let after: Box<dyn FnOnce(&AnyBox) + Send> = Box::new(move |v: &AnyBox| {
            if let Some(t) = v.downcast_ref::<T>() {
                after(t);
            }
        });
        let op = Op::Call { job, reply, after };
        let answer = self.queue(op, rx);
        async move {
            answer
                .await?
                .downcast::<T>()
                .map(|b| *b)
                .map_err(|_| WriterError::Store("internal: result of the wrong type".into()))
        }
    }

    fn queue<T: Send + 'static>(
        &self,
        op: Op,
        rx: oneshot::Receiver<Result<T, String>>,
    ) -> impl Future<Output = Result<T, WriterError>> + Send + 'static {
        let sent = self.tx.send(op).map_err(|_| WriterError::Stopped);
        async move {
            sent?;
            rx.await
                .map_err(|_| WriterError::Stopped)?
                .map_err(WriterError::Store)
        }
    }

    /// Runs `f` on the store inside the next group commit; answers after the commit (so
    /// what `f` wrote is durable when this returns).
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut DeliveryStore) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, WriterError> {
        self.run_queued(f, |_| {}).await
    }
}

enum Done {
    Seq(Reply<u64>, u64),
    Receipt(Reply<Receipt>, Receipt, After<Receipt>),
    Any(Reply<AnyBox>, AnyBox, After<AnyBox>),
}

/// The caller of an operation that failed: told at once (nothing of its own will commit).
enum Failed {
    Seq(Reply<u64>),
    Receipt(Reply<Receipt>),
    Any(Reply<AnyBox>),
}

impl Failed {
    fn tell(self, why: String) {
        match self {
            Self::Seq(r) => drop(r.send(Err(why))),
            Self::Receipt(r) => drop(r.send(Err(why))),
            Self::Any(r) => drop(r.send(Err(why))),
        }
    }
}

impl Done {
    /// The batch failed as a whole (its commit): nothing in it is stored.
    fn fail(self, why: String) {
        match self {
            Self::Seq(r, _) => Failed::Seq(r).tell(why),
            Self::Receipt(r, ..) => Failed::Receipt(r).tell(why),
            Self::Any(r, ..) => Failed::Any(r).tell(why),
        }
    }

    /// Committed: answer the caller (after the operation's `after` hook).
    fn succeed(self) {
        match self {
            Self::Seq(r, v) => drop(r.send(Ok(v))),
            Self::Receipt(r, v, after) => {
                after(&v);
                drop(r.send(Ok(v)))
            }
            Self::Any(r, v, after) => {
                after(&v);
                drop(r.send(Ok(v)))
            }
        }
    }
}

/// An error with its causes, one after the other ("what: why: deeper why").
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

/// Runs one operation of a batch.
fn apply(s: &mut DeliveryStore, op: Op) -> Result<Done, (Failed, StoreError)> {
    match op {
        Op::Enqueue {
            stream,
            id,
            expires_at_ms,
            seal,
            reply,
        } => match s.enqueue(&stream, &id, expires_at_ms, seal) {
            Ok(seq) => Ok(Done::Seq(reply, seq)),
            Err(e) => Err((Failed::Seq(reply), e)),
        },
        Op::Receive {
            stream,
            seq,
            id,
            envelope,
            reply,
            after,
        } => {
            let arrival = Arrival {
                stream: &stream,
                seq,
                id: id.as_deref(),
                envelope: &envelope,
            };
            match s.receive(&arrival) {
                Ok(r) => Ok(Done::Receipt(reply, r, after)),
                Err(e) => Err((Failed::Receipt(reply), e)),
            }
        }
        Op::Call { job, reply, after } => match job(s) {
            Ok(v) => Ok(Done::Any(reply, v, after)),
            Err(e) => Err((Failed::Any(reply), e)),
        },
    }
}

fn sql(what: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |source| StoreError::Sql { what, source }
}

/// Runs one of the savepoint statements (prepared once: it runs twice per operation).
fn savepoint(s: &DeliveryStore, statement: &'static str) -> Result<(), StoreError> {
    s.conn()
        .prepare_cached(statement)
        .and_then(|mut st| st.execute([]))
        .map(drop)
        .map_err(sql(statement))
}

fn run(mut store: DeliveryStore, rx: std_mpsc::Receiver<Op>) {
    while let Ok(first) = rx.recv() {
        let mut ops = vec![first];
        while let Ok(op) = rx.try_recv() {
            ops.push(op);
            if ops.len() >= 4096 {
                break;
            }
        }
        let mut done = Vec::with_capacity(ops.len());
        // Each operation is undone alone when it fails: its caller is told why, and the
        // rest of the batch commits. Enqueues and arrivals are atomic on their own (the
        // store runs each in a savepoint); a job, which may write anything, gets one here.
        let result = store.batch(|s| {
            for op in ops {
                let job = matches!(op, Op::Call { .. });
                if job {
                    savepoint(s, "SAVEPOINT job")?;
                }
                match apply(s, op) {
                    Ok(d) => {
                        if job {
                            savepoint(s, "RELEASE job")?;
                        }
                        done.push(d);
                    }
                    Err((failed, e)) => {
                        if job {
                            savepoint(s, "ROLLBACK TO job")?;
                            savepoint(s, "RELEASE job")?;
                        }
                        failed.tell(chain(&e));
                    }
                }
            }
            Ok(())
        });
        match result {
            Ok(()) => done.into_iter().for_each(Done::succeed),
            Err(e) => {
                let why = chain(&e);
                for d in done {
                    d.fail(why.clone());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::KeyPair;

    #[tokio::test]
    async fn concurrent_enqueues_get_consecutive_seqs_and_survive_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("d.db");
        let owner = KeyPair::generate().expect("key");
        let stream = StreamId {
            owner: owner.public(),
            instance: "i".into(),
            receiver: "n1".into(),
            lane: Default::default(),
        };
        let w = Writer::open(&path).expect("open");
        let mut tasks = Vec::new();
        for i in 0..200 {
            let (w, s) = (w.clone(), stream.clone());
            tasks.push(tokio::spawn(async move {
                w.enqueue(s, format!("m{i}"), u64::MAX, |_| vec![0u8; 256])
                    .await
            }));
        }
        let mut seqs = Vec::new();
        for t in tasks {
            seqs.push(t.await.expect("join").expect("enqueue"));
        }
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=200).collect::<Vec<_>>());
        drop(w);
        let store = DeliveryStore::open(&path).expect("reopen");
        assert_eq!(store.unacked(&stream, 1000).expect("unacked").len(), 200);
    }

    #[tokio::test]
    async fn after_hooks_run_in_commit_order_even_when_nobody_waits() {
        let dir = tempfile::tempdir().expect("tempdir");
        let w = Writer::open(&dir.path().join("d.db")).expect("open");
        let (tx, rx) = std::sync::mpsc::channel();
        for i in 0..50 {
            let tx = tx.clone();
            // Dropped at once, as when a link breaks before the commit finished.
            drop(w.run_queued(
                move |_| Ok(i),
                move |v: &i32| {
                    let _ = tx.send(*v);
                },
            ));
        }
        // Queued after them: answered only once they all committed.
        w.run(|_| Ok(())).await.expect("run");
        let got: Vec<i32> = rx.try_iter().collect();
        assert_eq!(got, (0..50).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_failing_job_is_undone_alone_and_told_why() {
        let dir = tempfile::tempdir().expect("tempdir");
        let w = Writer::open(&dir.path().join("d.db")).expect("open");
        w.run(|s| {
            s.conn()
                .execute_batch("CREATE TABLE t (v INTEGER PRIMARY KEY)")
                .map_err(sql("create"))
        })
        .await
        .expect("create");
        // A slow job holds the writer, so the three behind it share one batch.
        let slow = w.run_queued(
            |_| {
                std::thread::sleep(std::time::Duration::from_millis(100));
                Ok(())
            },
            |_| {},
        );
        let insert = |v: i64| {
            move |s: &mut DeliveryStore| {
                s.conn()
                    .execute("INSERT INTO t (v) VALUES (?1)", [v])
                    .map_err(sql("insert"))
            }
        };
        let before = w.run_queued(insert(1), |_| {});
        // Writes a row, then fails on a duplicate: both undone.
        let failing = w.run_queued(
            move |s| {
                insert(2)(s)?;
                insert(1)(s)
            },
            |_| {},
        );
        let after = w.run_queued(insert(3), |_| {});
        slow.await.expect("slow");
        before.await.expect("the job before commits");
        let err = failing.await.expect_err("the failing job fails");
        assert!(
            err.to_string().contains("UNIQUE constraint failed"),
            "the cause is told: {err}"
        );
        after.await.expect("the job after commits");
        let rows: Vec<i64> = w
            .run(|s| {
                let mut st = s
                    .conn()
                    .prepare("SELECT v FROM t ORDER BY v")
                    .map_err(sql("read"))?;
                let rows = st.query_map([], |r| r.get(0)).map_err(sql("read"))?;
                rows.collect::<Result<_, _>>().map_err(sql("read"))
            })
            .await
            .expect("read");
        assert_eq!(rows, [1, 3], "only the failing job's writes are undone");
    }
}
