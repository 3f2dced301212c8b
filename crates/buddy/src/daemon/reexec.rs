//! Re-executing the buddy into a newer program without letting go of its service
//! (`Op::Reexec`, after an agent update): the handoff out, and `--resume` in.
//!
//! What survives the exec is what the kernel keeps: the pid (so the buddy's identity, its
//! start time included), the service as its child, and the descriptors the buddy marks
//! inheritable — the listening socket, the run-directory lock (still held) and the
//! service's output pipes. The rest is written to `handoff.json` (fsync'ed) and read back:
//! the service's state with its timers as ages, the failure counters, the drop counts. The
//! signal mask survives too, so a SIGCHLD or SIGTERM that arrives meanwhile stays pending;
//! and any child that exited meanwhile is still a zombie for the new program to reap.
//! Journal, diagnostics, log files and the spec (`spec.json`, written before the exec)
//! are opened again by name. The controller connection
//! is closed; the agent expects that and re-attaches.

use super::{After, Buddy, Child, Parts, Svc, VERSION, open_common};
use crate::diag::Diag;
use crate::output::Output;
use crate::policy::Counters;
use crate::sys;
use reeve_proto::buddy::{HANDOFF_VERSION, Handoff, HandoffSvc, Reply, files};
use std::ffi::CString;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

impl Buddy {
    /// `Op::Reexec`: checks and answers; the exec itself follows once the answer is sent
    /// (end of the loop's iteration).
    pub(super) fn on_reexec(&mut self, path: String) -> Reply {
        if matches!(self.svc, Svc::Stopping { .. }) || self.exiting {
            return Reply::Error {
                message: "the service is stopping; re-execute once it has stopped".into(),
            };
        }
        let p = Path::new(&path);
        if !p.is_absolute() || !p.is_file() {
            return Reply::Error {
                message: format!("{path} is not a file given by an absolute path"),
            };
        }
        self.pending_exec = Some(path);
        Reply::Ok
    }

    /// Carries out the pending re-exec. Returns only if the exec failed, with everything
    /// as it was (but the controller connection, which the agent re-opens).
    pub(super) fn reexec_now(&mut self) {
        let Some(path) = self.pending_exec.take() else {
            return;
        };
        if let Some(c) = self.conn.as_mut() {
            c.drain_for(200);
        }
        self.output.finish(&self.spec);
        self.sync_journal();
        let Some(handoff) = self.handoff() else {
            self.diag.log("re-exec refused: the service is stopping");
            return;
        };
        // The next program reads the spec from `spec.json`; a buddy given its spec on
        // stdin has not written it yet.
        if let Err(e) = super::requests::write_spec(&self.spec) {
            self.diag.log(&format!("re-exec: {e}"));
            return;
        }
        if let Err(e) = write_handoff(&handoff) {
            self.diag
                .log(&format!("re-exec: cannot write {}: {e}", files::HANDOFF));
            return;
        }
        self.conn = None;
        let (cpath, args) = match exec_args(&path) {
            Ok(v) => v,
            Err(e) => {
                self.diag.log(&format!("re-exec: {e}"));
                let _ = std::fs::remove_file(files::HANDOFF);
                return;
            }
        };
        self.diag
            .log(&format!("re-executing into {path} (was buddy {VERSION})"));
        self.inheritable(true);
        let argv: Vec<&std::ffi::CStr> = args.iter().map(CString::as_c_str).collect();
        let err = sys::exec(&cpath, &argv);
        self.inheritable(false);
        let _ = std::fs::remove_file(files::HANDOFF);
        self.diag
            .log(&format!("re-exec into {path} failed: {err}; carrying on"));
    }

    /// Marks the descriptors a re-exec keeps inheritable (or close-on-exec again).
    fn inheritable(&self, on: bool) {
        let mut fds: Vec<BorrowedFd<'_>> = vec![self.listener.as_fd(), self._lock.as_fd()];
        fds.extend(self.output.stream_fds().into_iter().map(|(fd, _)| fd));
        for fd in fds {
            let _ = sys::set_cloexec(fd, !on);
        }
    }

    /// What the next program needs; `None` while the service is stopping.
    fn handoff(&self) -> Option<Handoff> {
        use std::os::fd::AsRawFd;
        let now = Instant::now();
        let svc = match &self.svc {
            Svc::Stopped => HandoffSvc::Stopped,
            Svc::Failed => HandoffSvc::Failed,
            Svc::Running(c) => HandoffSvc::Running {
                pid: c.pid,
                age_ms: ms(c.started.elapsed()),
                healthy_in_ms: c.healthy_at.map(|t| ms(t.saturating_duration_since(now))),
            },
            Svc::BackingOff { until } => HandoffSvc::BackingOff {
                in_ms: ms(until.saturating_duration_since(now)),
            },
            Svc::Stopping { .. } => return None,
        };
        Some(Handoff {
            version: HANDOFF_VERSION,
            listener_fd: self.listener.as_raw_fd(),
            lock_fd: self._lock.as_raw_fd(),
            streams: self
                .output
                .stream_fds()
                .into_iter()
                .map(|(fd, m)| (fd.as_raw_fd(), m as char))
                .collect(),
            svc,
            mono_ms: self.mono_ms(),
            consecutive_failures: self.counters.consecutive_failures,
            restart_times: self.counters.restart_times.iter().copied().collect(),
            restarts: self.restarts,
            spawned_once: self.spawned_once,
            last_exit: self.last_exit,
            since_ms: self.since_ms,
            dropped_total: self.output.dropped_total,
            dropped_unreported: self.output.dropped_unreported,
        })
    }

    /// `--resume`: takes over from the program this process ran before (see the module
    /// documentation). The run directory is the current directory.
    pub fn resume(opts: &super::Options) -> Result<Buddy, String> {
        let data =
            std::fs::read(files::HANDOFF).map_err(|e| format!("read {}: {e}", files::HANDOFF))?;
        let _ = std::fs::remove_file(files::HANDOFF);
        let h: Handoff =
            serde_json::from_slice(&data).map_err(|e| format!("parse {}: {e}", files::HANDOFF))?;
        if h.version != HANDOFF_VERSION {
            return Err(format!(
                "{} has format {}, this buddy reads {HANDOFF_VERSION}",
                files::HANDOFF,
                h.version
            ));
        }
        let lock = sys::adopt_fd(h.lock_fd)
            .map(File::from)
            .ok_or("the handed-over lock descriptor is not open")?;
        let listener = sys::adopt_fd(h.listener_fd)
            .map(UnixListener::from)
            .ok_or("the handed-over socket descriptor is not open")?;
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("socket: {e}"))?;
        let mut diag = Diag::open(PathBuf::from(files::BUDDY_LOG), opts.foreground);
        let (spec, sigfd, journal, devnull) = open_common(&mut diag, None)?;
        let mut output = Output::new(&spec);
        for (fd, marker) in &h.streams {
            match sys::adopt_fd(*fd) {
                Some(owned) => {
                    if let Err(e) = output.adopt_stream(owned, *marker as u8) {
                        diag.log(&format!("handed-over output pipe {fd}: {e}"));
                    }
                }
                None => diag.log(&format!("handed-over output pipe {fd} is not open")),
            }
        }
        let mut b = Buddy::assemble(Parts {
            spec,
            journal,
            diag,
            sigfd,
            listener,
            output,
            devnull,
            lock,
        });
        let now = Instant::now();
        let back = |ms: u64| now.checked_sub(Duration::from_millis(ms)).unwrap_or(now);
        let ahead = |ms: u64| now + Duration::from_millis(ms);
        b.epoch = back(h.mono_ms);
        b.svc = match h.svc {
            HandoffSvc::Stopped => Svc::Stopped,
            HandoffSvc::Failed => Svc::Failed,
            HandoffSvc::Running {
                pid,
                age_ms,
                healthy_in_ms,
            } => Svc::Running(Child {
                pid,
                started: back(age_ms),
                healthy_at: healthy_in_ms.map(ahead),
            }),
            HandoffSvc::BackingOff { in_ms } => Svc::BackingOff {
                until: ahead(in_ms),
            },
        };
        b.after = After::Policy;
        b.counters = Counters {
            consecutive_failures: h.consecutive_failures,
            restart_times: h.restart_times.into_iter().collect(),
        };
        b.restarts = h.restarts;
        b.spawned_once = h.spawned_once;
        b.last_exit = h.last_exit;
        b.since_ms = h.since_ms;
        b.output.dropped_total = h.dropped_total;
        b.output.dropped_unreported = h.dropped_unreported;
        b.fresh = false;
        b.announce("resumed after a re-exec", true);
        // Whatever exited during the exec is a zombie waiting for us.
        while let Some((pid, raw)) = sys::reap_any() {
            b.on_reaped(pid, raw);
        }
        Ok(b)
    }
}

fn exec_args(path: &str) -> Result<(CString, Vec<CString>), String> {
    let c = |s: &str| CString::new(s).map_err(|_| format!("{s:?} holds a NUL byte"));
    Ok((
        c(path)?,
        vec![c("reeve-buddy")?, c("--dir")?, c(".")?, c("--resume")?],
    ))
}

/// Writes the handoff durably: temp file, fsync, rename, directory fsync.
fn write_handoff(h: &Handoff) -> std::io::Result<()> {
    let data = serde_json::to_vec(h).map_err(std::io::Error::other)?;
    let tmp = format!("{}.tmp", files::HANDOFF);
    let mut f = File::create(&tmp)?;
    f.write_all(&data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, files::HANDOFF)?;
    File::open(".")?.sync_all()
}
