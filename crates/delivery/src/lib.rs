//! reeve's message layer (DESIGN.md §2.1), the parts that do no IO: identities and keys,
//! the signed envelope, and the receiving side of a stream (in order, once, with gaps held
//! until the missing message or a signed skip marker arrives).
//!
//! Invariants:
//! - signatures cover the exact bytes sent: signed bodies travel as byte strings and are
//!   parsed only after their signature verified (`verify_strict`), never re-serialised;
//! - two signatures, two jobs: the **authorization** signature by whoever asks (policy is
//!   decided on it), the **sequencing** signature by the stream's owner, who assigns `seq`;
//!   a relay that owns neither key can carry a message but not forge, alter, retarget,
//!   reorder or replay it;
//! - every signature has its own domain prefix, so a signature made for one purpose never
//!   verifies for another.
//!
//! Also here: the durable outbox and inbox (`store`, SQLite with `synchronous=FULL`).
//! And the sliding-window sender (`sender`) and group commit through one writer thread
//! (`writer`), the mutual Ed25519 handshake with the hub's signed time (`handshake`),
//! and hub-adjusted time with a persisted floor (`clock`). The local policy (`policy`)
//! decides who may call what. Links run over a [`transport::Transport`]: the relay's
//! WebSocket today (its adapters are in the agent and the hub), NATS later.

pub mod clock;
pub mod envelope;
pub mod handshake;
pub mod join;
pub mod keys;
pub mod lane;
pub mod link;
pub mod pipeline;
pub mod policy;
pub mod rotation;
pub mod sender;
pub mod steward;
pub mod store;
pub mod stream;
pub mod transport;
pub mod writer;
