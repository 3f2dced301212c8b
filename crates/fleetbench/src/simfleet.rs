//! A hub process with an operator and simulated nodes: enrolment through the join API,
//! connection, and waiting on the nodes' counters.

use crate::fleet::{Api, Bins, HubProc, Operator};
use crate::pool::Pool;
use crate::sim::{Setup, SimNode, Stats};
use anyhow::{Context, Result, bail};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A hub, its operator, and the simulated nodes' runtimes and counters.
pub struct SimFleet {
    /// The hub process.
    pub hub: HubProc,
    /// The operator (admin) who sends.
    pub op: Operator,
    /// Counters of every simulated node.
    pub stats: Arc<Stats>,
    /// Whether nodes execute what they receive (shared switch).
    pub execute: Arc<AtomicBool>,
    /// Where the nodes' stores live.
    pub dir: std::path::PathBuf,
    pool: Pool,
    tasks: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl SimFleet {
    /// Starts a hub in `dir` and makes operator `bench`; nodes run on `threads` threads.
    pub fn start(bins: &Bins, dir: &Path, threads: usize) -> Result<Self> {
        let hub = HubProc::start(bins, dir, None)?;
        let op = hub.operator(bins, "bench")?;
        let nodes_dir = dir.join("nodes");
        std::fs::create_dir_all(&nodes_dir)?;
        Ok(Self {
            hub,
            op,
            stats: Arc::new(Stats::default()),
            execute: Arc::new(AtomicBool::new(true)),
            dir: nodes_dir,
            pool: Pool::new(threads, "sim")?,
            tasks: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// An API client as the operator.
    pub async fn api(&self) -> Result<Api> {
        Api::connect(&self.hub.url, Some(&self.op.token)).await
    }

    /// What nodes reaching the hub at `url` need.
    pub fn setup(&self, url: &str) -> Setup {
        Setup {
            url: url.into(),
            hub_key: self.hub.key,
            operator: (self.op.name.clone(), self.op.key.public()),
            execute: self.execute.clone(),
            dir: self.dir.clone(),
        }
    }

    /// Creates and enrols `names` (one-time tokens made on the hub's data directory, then
    /// `POST /api/v1/join` over `conns` parallel connections); the nodes reach the hub at
    /// `url`. Returns the nodes, not yet connected.
    pub async fn enrol(
        &self,
        names: &[String],
        url: &str,
        conns: usize,
    ) -> Result<Vec<Arc<SimNode>>> {
        let setup = self.setup(url);
        let mut jobs = Vec::with_capacity(names.len());
        for n in names {
            let node = SimNode::new(n, setup.clone(), self.stats.clone())?;
            jobs.push((node, self.hub.token()?));
        }
        let nodes: Vec<Arc<SimNode>> = jobs.iter().map(|(n, _)| n.clone()).collect();
        let queue = Arc::new(std::sync::Mutex::new(jobs));
        let mut workers = Vec::new();
        for _ in 0..conns.max(1) {
            let (q, url) = (queue.clone(), self.hub.url.clone());
            workers.push(tokio::spawn(async move {
                let mut api = Api::connect(&url, None).await?;
                loop {
                    let job = q.lock().ok().and_then(|mut v| v.pop());
                    let Some((node, token)) = job else { break };
                    node.join(&mut api, &token).await?;
                }
                Ok::<_, anyhow::Error>(())
            }));
        }
        for w in workers {
            w.await.context("join worker")??;
        }
        Ok(nodes)
    }

    /// Connects `nodes` (each once), at most `per_second` new connections per second
    /// (0: all at once).
    pub async fn connect(&self, nodes: &[Arc<SimNode>], per_second: f64) {
        let started = Instant::now();
        for (i, n) in nodes.iter().enumerate() {
            if per_second > 0.0 {
                let due = started + Duration::from_secs_f64(i as f64 / per_second);
                tokio::time::sleep_until(due.into()).await;
            }
            let task = self.pool.spawn(n.clone().run());
            if let Ok(mut t) = self.tasks.lock() {
                t.push(task);
            }
        }
    }

    /// Waits until `n` nodes are connected.
    pub async fn wait_connected(&self, n: u64, limit: Duration) -> Result<Duration> {
        let started = Instant::now();
        loop {
            let c = self.stats.connected.load(Ordering::Relaxed);
            if c >= n {
                return Ok(started.elapsed());
            }
            if started.elapsed() > limit {
                bail!(
                    "only {c} of {n} simulated nodes connected within {:.0} s (errors: {})",
                    limit.as_secs_f64(),
                    self.stats.errors.load(Ordering::Relaxed)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until `f(stats)` reaches `target`, failing after `limit` without progress.
    pub async fn wait_count(
        &self,
        what: &str,
        target: u64,
        stall: Duration,
        f: impl Fn(&Stats) -> u64,
    ) -> Result<()> {
        let mut last = (f(&self.stats), Instant::now());
        loop {
            let v = f(&self.stats);
            if v >= target {
                return Ok(());
            }
            if v != last.0 {
                last = (v, Instant::now());
            } else if last.1.elapsed() > stall {
                bail!(
                    "{what}: stuck at {v} of {target} for {:.0} s (errors {}, refused {})",
                    stall.as_secs_f64(),
                    self.stats.errors.load(Ordering::Relaxed),
                    self.stats.refused.load(Ordering::Relaxed)
                );
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Disconnects every node (drops their tasks).
    pub fn disconnect_all(&self) {
        if let Ok(mut tasks) = self.tasks.lock() {
            for t in tasks.drain(..) {
                t.abort();
            }
        }
    }
}

impl Drop for SimFleet {
    fn drop(&mut self) {
        self.stats.stopping.store(true, Ordering::Relaxed);
        self.disconnect_all();
    }
}

/// Node names `prefix-00001` … .
pub fn names(prefix: &str, n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("{prefix}-{i:05}")).collect()
}
