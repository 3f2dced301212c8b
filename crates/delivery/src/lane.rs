//! Lanes (DESIGN.md §2.1): an owner keeps up to three streams to each receiver, each with
//! its own numbering, window and acks, so that none can hold up another:
//!
//! - **ordered** (the default): the receiver runs the stream's requests one at a time, in
//!   stream order;
//! - **priority**: control messages only ([`CONTROL_METHODS`]: status queries, cancels);
//!   sent before the other lanes and run by their own runner at the receiver, so a
//!   backlog or a long command on the ordered lane never delays them;
//! - **unordered** (a request with `unordered`, Steward's `REQn…`): delivered exactly once
//!   through its own window like the others, but run as it arrives, several at a time (a
//!   cap per sender), outside any order.
//!
//! The lane is part of the stream's identity ([`crate::envelope::StreamId::lane`]), under
//! the owner's sequencing signature; the authorizer chooses `unordered`, the method
//! decides the priority lane, and a receiver refuses a priority-lane envelope that carries
//! anything but a control method.

use crate::envelope::Request;
use serde::{Deserialize, Serialize};

/// Methods that travel on the priority lane.
pub const CONTROL_METHODS: &[&str] = &["ops.ps", "service.status", "hello", "apply.cancel"];

/// One of an owner's streams to a receiver.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
#[serde(rename_all = "snake_case")]
pub enum Lane {
    /// Run in stream order, one at a time.
    #[default]
    Ordered,
    /// Control messages, ahead of everything else.
    Priority,
    /// Run as they arrive, concurrently (capped per sender).
    Unordered,
}

impl Lane {
    /// Every lane, in the order a sender serves them.
    pub const ALL: [Lane; 3] = [Lane::Priority, Lane::Ordered, Lane::Unordered];

    /// The default lane (serialised by omission, so envelopes from before lanes still
    /// read).
    pub fn is_ordered(&self) -> bool {
        *self == Lane::Ordered
    }

    /// Its name, as in JSON and in the hub's tables.
    pub fn as_str(&self) -> &'static str {
        match self {
            Lane::Ordered => "ordered",
            Lane::Priority => "priority",
            Lane::Unordered => "unordered",
        }
    }

    /// The lane named `s`.
    pub fn parse(s: &str) -> Option<Lane> {
        Lane::ALL.into_iter().find(|l| l.as_str() == s)
    }
}

/// Is `method` a control method (priority lane)?
pub fn is_control(method: &str) -> bool {
    CONTROL_METHODS.contains(&method)
}

/// The lane `request` travels on.
pub fn lane_of(request: &Request) -> Lane {
    if is_control(&request.method) {
        Lane::Priority
    } else if request.unordered {
        Lane::Unordered
    } else {
        Lane::Ordered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_method_picks_priority_and_the_request_picks_unordered() {
        let mut r = Request::new("op", "n1", "exec", serde_json::json!({}), 1);
        assert_eq!(lane_of(&r), Lane::Ordered);
        r.unordered = true;
        assert_eq!(lane_of(&r), Lane::Unordered);
        r.method = "ops.ps".into();
        assert_eq!(lane_of(&r), Lane::Priority);
        for l in Lane::ALL {
            assert_eq!(Lane::parse(l.as_str()), Some(l));
        }
        assert_eq!(Lane::parse("fast"), None);
    }
}
