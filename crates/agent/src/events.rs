//! The event log's owner: one thread holds the SQLite store and does every write, so writes
//! never contend; everyone else holds a cloneable [`EventLog`] handle that sends it commands.
//! Appended events are broadcast to live subscribers only after they are durable.
//!
//! Group commit: the writer drains every queued append into one transaction, so a burst of
//! events costs one fsync, not one each.

use anyhow::{Context, Result, anyhow};
use reeve_proto::UnixMillis;
use reeve_proto::api::Desired;
use reeve_proto::event::{Event, EventKind};
use reeve_store::{EventQuery, ServiceRecord, Store, Write};
use std::path::Path;
use std::sync::mpsc as std_mpsc;
use tokio::sync::{broadcast, oneshot};

/// Now, in milliseconds since the Unix epoch.
pub fn now_ms() -> UnixMillis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Builds an event stamped now.
pub fn event(
    service: Option<&str>,
    kind: EventKind,
    actor: &str,
    message: impl Into<String>,
    detail: serde_json::Value,
) -> Event {
    Event {
        id: 0,
        ts_ms: now_ms(),
        service: service.map(str::to_owned),
        kind,
        actor: actor.to_owned(),
        message: message.into(),
        detail,
    }
}

type Reply<T> = oneshot::Sender<Result<T, String>>;

enum Cmd {
    Write(Write, Option<Reply<()>>),
    Modules(Reply<Vec<String>>),
    Kv(String, Reply<Option<String>>),
    Query(EventQuery, Reply<Vec<Event>>),
    Services(Reply<Vec<ServiceRecord>>),
    Prune(UnixMillis, u64, Reply<u64>),
}

/// Handle to the event log and service records. Cheap to clone.
#[derive(Clone)]
pub struct EventLog {
    tx: std_mpsc::Sender<Cmd>,
    live: broadcast::Sender<Event>,
}

impl EventLog {
    /// Opens the store and starts its writer thread.
    pub fn open(path: &Path) -> Result<Self> {
        let store = Store::open(path)?;
        let (tx, rx) = std_mpsc::channel();
        // Subscribers that fall behind catch up from the store (see the API's stream), so the
        // ring can stay small: every slot is allocated up front.
        let (live, _) = broadcast::channel(256);
        let live2 = live.clone();
        std::thread::Builder::new()
            .name("reeve-store".into())
            .spawn(move || writer(store, rx, live2))
            .context("cannot start the store thread")?;
        Ok(Self { tx, live })
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Cmd) -> Result<T> {
        let (otx, orx) = oneshot::channel();
        self.tx
            .send(make(otx))
            .map_err(|_| anyhow!("the store thread has stopped"))?;
        orx.await
            .map_err(|_| anyhow!("the store thread has stopped"))?
            .map_err(|e| anyhow!(e))
    }

    /// Appends events and waits until they are durable.
    pub async fn append(&self, events: Vec<Event>) -> Result<()> {
        self.call(|r| Cmd::Write(Write::Events(events), Some(r)))
            .await
    }

    /// Appends one event and waits until it is durable.
    pub async fn record(&self, event: Event) -> Result<()> {
        self.append(vec![event]).await
    }

    /// Appends an event without waiting (for paths that cannot wait, e.g. shutdown notes).
    pub fn record_nowait(&self, event: Event) {
        let _ = self.tx.send(Cmd::Write(Write::Events(vec![event]), None));
    }

    /// Appends events from a buddy's journal with the journal position, atomically.
    pub async fn append_buddy(&self, service: &str, events: Vec<Event>, seq: u64) -> Result<()> {
        let w = Write::BuddyEvents {
            service: service.to_owned(),
            events,
            journal_seq: seq,
        };
        self.call(|r| Cmd::Write(w, Some(r))).await
    }

    /// Queries stored events.
    pub async fn query(&self, q: EventQuery) -> Result<Vec<Event>> {
        self.call(|r| Cmd::Query(q, r)).await
    }

    /// Subscribes to events appended from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.live.subscribe()
    }

    /// All service records.
    pub async fn services(&self) -> Result<Vec<ServiceRecord>> {
        self.call(Cmd::Services).await
    }

    /// Creates or replaces a service record.
    pub async fn put_service(&self, rec: ServiceRecord) -> Result<()> {
        self.call(|r| Cmd::Write(Write::PutService(rec), Some(r)))
            .await
    }

    /// Records a new desired state with the event that explains it.
    pub async fn set_desired(&self, name: &str, desired: Desired, ev: Event) -> Result<()> {
        let w = Write::SetDesired {
            name: name.to_owned(),
            desired,
            event: ev,
        };
        self.call(|r| Cmd::Write(w, Some(r))).await
    }

    /// Forgets a service's record (its events stay).
    pub async fn delete_service(&self, name: &str) -> Result<()> {
        let w = Write::DeleteService(name.to_owned());
        self.call(|r| Cmd::Write(w, Some(r))).await
    }

    /// Every installed module's record (JSON).
    pub async fn modules(&self) -> Result<Vec<String>> {
        self.call(Cmd::Modules).await
    }

    /// A named record.
    pub async fn kv(&self, key: &str) -> Result<Option<String>> {
        let k = key.to_owned();
        self.call(|r| Cmd::Kv(k, r)).await
    }

    /// Applies one write (and waits until it is durable).
    pub async fn write(&self, w: Write) -> Result<()> {
        self.call(|r| Cmd::Write(w, Some(r))).await
    }

    /// Applies retention; returns how many events were dropped.
    pub async fn prune(&self, older_than: UnixMillis, keep: u64) -> Result<u64> {
        self.call(|r| Cmd::Prune(older_than, keep, r)).await
    }
}

/// The error with its causes, for a reply across the thread boundary.
fn chain(e: reeve_store::StoreError) -> String {
    format!("{:#}", anyhow::Error::new(e))
}

fn writer(mut store: Store, rx: std_mpsc::Receiver<Cmd>, live: broadcast::Sender<Event>) {
    let mut next: Option<Cmd> = None;
    loop {
        let first = match next.take() {
            Some(c) => c,
            None => match rx.recv() {
                Ok(c) => c,
                Err(_) => return,
            },
        };
        match first {
            Cmd::Write(w, r) => {
                // Group commit: every write already queued goes into the same transaction.
                let mut writes = vec![w];
                let mut replies = vec![r];
                while let Ok(c) = rx.try_recv() {
                    match c {
                        Cmd::Write(w, r) => {
                            writes.push(w);
                            replies.push(r);
                        }
                        other => {
                            next = Some(other);
                            break;
                        }
                    }
                }
                let res = store.apply(&mut writes).map_err(chain);
                if res.is_ok() {
                    for e in writes.iter().flat_map(Write::events) {
                        let _ = live.send(e.clone());
                    }
                }
                for r in replies.into_iter().flatten() {
                    let _ = r.send(res.clone());
                }
            }
            Cmd::Query(q, r) => {
                let _ = r.send(store.query_events(&q).map_err(chain));
            }
            Cmd::Kv(k, r) => {
                let _ = r.send(store.kv(&k).map_err(chain));
            }
            Cmd::Modules(r) => {
                let _ = r.send(store.modules().map_err(chain));
            }
            Cmd::Services(r) => {
                let _ = r.send(store.services().map_err(chain));
            }
            Cmd::Prune(t, keep, r) => {
                let _ = r.send(store.prune_events(t, keep).map_err(chain));
            }
        }
    }
}
