//! Wire types shared by reeve's processes: the agent ↔ buddy protocol, service events,
//! the agent's local HTTP API bodies and the launcher's state and messages.
//!
//! Invariant: this crate does no IO and depends on serde only, so the small buddy binary
//! can use it without pulling in a runtime.

pub mod api;
pub mod buddy;
pub mod event;
pub mod launcher;
pub mod time;

/// Milliseconds since the Unix epoch, the one timestamp unit on every wire.
pub type UnixMillis = u64;
