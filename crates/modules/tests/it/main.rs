//! Integration tests of reeve-modules: real archives, real keys, a real HTTP server.

// Fixtures panic on setup failures: that is a test failure with its message.
#![allow(clippy::unwrap_used)]

mod example;
mod helper;
mod registry;
mod sign;
mod unpack;
