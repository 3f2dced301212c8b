//! The scenarios of issue 3's benchmarks. Each runs against a fresh `reeve hub` process
//! in its own directory and returns an [`Outcome`](crate::report::Outcome).

pub mod backlog;
pub mod fanout;
pub mod idle;
pub mod roundtrip;
pub mod throughput;

use crate::fleet::Bins;
use base64::Engine;
use std::path::PathBuf;

/// What every scenario gets.
#[derive(Clone, Debug)]
pub struct Ctx {
    /// The binaries under test.
    pub bins: Bins,
    /// Short version (fewer samples, smaller counts).
    pub quick: bool,
    /// The scenario's own directory.
    pub dir: PathBuf,
    /// `nats-server`.
    pub nats_server: PathBuf,
    /// `ansible` (absent: skipped).
    pub ansible: Option<PathBuf>,
    /// Threads for simulated nodes.
    pub threads: usize,
    /// Overrides of the scenario's size (`--count`).
    pub count: Option<usize>,
}

impl Ctx {
    /// `quick` or `full` by the mode, unless `--count` overrides.
    pub fn size(&self, quick: usize, full: usize) -> usize {
        self.count.unwrap_or(if self.quick { quick } else { full })
    }

    /// Is the fsync shim preloaded in this process (and so in the hub it starts)?
    pub fn shim(&self) -> bool {
        std::env::var("LD_PRELOAD").is_ok_and(|v| v.contains("fsync-shim"))
    }
}

/// 256 bytes of base64 (192 random bytes): the payload of the throughput and backlog
/// messages, carried in the request's `data`.
pub fn payload_256() -> String {
    let mut b = [0u8; 192];
    let _ = getrandom::fill(&mut b);
    base64::engine::general_purpose::STANDARD.encode(b)
}
