//! fork + exec of the service (and of the log-pipe helper): the only place that forks a
//! process that is going to exec.
//!
//! Everything the child needs (argv, envp, resolved program path, cwd, rlimits, ids, the
//! default signal action) is prepared before `fork`, so the child only calls
//! async-signal-safe functions: `sched_setaffinity`, `setsid`, `rt_sigaction` (raw, so
//! glibc's reserved signals are reset too), `sigprocmask`, `setrlimit`,
//! `setgroups`/`setgid`/`setuid`, `chdir`, `dup2`, `close_range` (fallback: `fcntl` per
//! descriptor) and `execve`. On any failure the child writes `(step, errno)` to a
//! close-on-exec error pipe and `_exit(127)`s; the parent reads that pipe: EOF means the exec
//! succeeded. For the fork the buddy briefly pins itself to its current CPU so the child
//! starts there (no cross-CPU wake-up on the restart path); the child gets the original CPU
//! mask back before anything else.

use std::ffi::{CString, OsStr};
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

#[cfg(target_env = "gnu")]
type Resource = libc::__rlimit_resource_t;
#[cfg(not(target_env = "gnu"))]
type Resource = libc::c_int;

/// A fully prepared exec: nothing in it allocates after `fork`.
pub struct Plan {
    path: CString,
    /// Kept alive for the pointers in `argv_ptrs`.
    _argv: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    /// Kept alive for the pointers in `envp_ptrs`.
    _envp: Vec<CString>,
    envp_ptrs: Vec<*const libc::c_char>,
    cwd: CString,
    rlimits: Vec<(Resource, libc::rlimit)>,
    uid: Option<libc::uid_t>,
    gid: Option<libc::gid_t>,
    set_groups: bool,
    max_fd: i32,
    nsig: libc::c_int,
}

/// What to prepare.
pub struct Command<'a> {
    /// Program and arguments.
    pub argv: &'a [String],
    /// Complete environment.
    pub env: &'a [(String, String)],
    /// Working directory (`/` if none).
    pub cwd: Option<&'a Path>,
    /// Switch to this uid.
    pub uid: Option<u32>,
    /// Switch to this gid (and only this group).
    pub gid: Option<u32>,
    /// Resource limits as (name, soft, hard).
    pub rlimits: &'a [reeve_proto::buddy::Rlimit],
}

/// The three standard descriptors of the child (all must be ≥ 3 in the parent).
pub struct Stdio {
    /// fd 0.
    pub stdin: RawFd,
    /// fd 1.
    pub stdout: RawFd,
    /// fd 2.
    pub stderr: RawFd,
}

fn cstring(what: &str, s: &[u8]) -> Result<CString, String> {
    CString::new(s).map_err(|_| format!("{what} contains a NUL byte"))
}

fn resource(name: &str) -> Option<Resource> {
    Some(match name {
        "nofile" => libc::RLIMIT_NOFILE,
        "nproc" => libc::RLIMIT_NPROC,
        "core" => libc::RLIMIT_CORE,
        "as" => libc::RLIMIT_AS,
        "cpu" => libc::RLIMIT_CPU,
        "fsize" => libc::RLIMIT_FSIZE,
        "data" => libc::RLIMIT_DATA,
        "stack" => libc::RLIMIT_STACK,
        "memlock" => libc::RLIMIT_MEMLOCK,
        _ => return None,
    })
}

fn rlim(v: u64) -> libc::rlim_t {
    if v == u64::MAX {
        libc::RLIM_INFINITY
    } else {
        v as libc::rlim_t
    }
}

/// Resolves `prog` through `PATH` of `env` when it has no `/`.
fn resolve(prog: &str, env: &[(String, String)]) -> Result<PathBuf, String> {
    if prog.contains('/') {
        return Ok(PathBuf::from(prog));
    }
    let path = env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str())
        .unwrap_or("/usr/local/bin:/usr/bin:/bin");
    for dir in path.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let cand = Path::new(dir).join(prog);
        if let Ok(md) = std::fs::metadata(&cand) {
            use std::os::unix::fs::PermissionsExt;
            if md.is_file() && md.permissions().mode() & 0o111 != 0 {
                return Ok(cand);
            }
        }
    }
    Err(format!("exec {prog}: not found in PATH ({path})"))
}

impl Plan {
    /// Prepares an exec; fails with a message when the command cannot possibly run.
    pub fn prepare(cmd: &Command<'_>) -> Result<Plan, String> {
        let prog = cmd.argv.first().ok_or("empty argv")?;
        let path = resolve(prog, cmd.env)?;
        let path = cstring("program path", path.as_os_str().as_bytes())?;
        let argv = cmd
            .argv
            .iter()
            .map(|a| cstring("argument", a.as_bytes()))
            .collect::<Result<Vec<_>, _>>()?;
        let envp = cmd
            .env
            .iter()
            .map(|(k, v)| cstring("environment variable", format!("{k}={v}").as_bytes()))
            .collect::<Result<Vec<_>, _>>()?;
        let mut argv_ptrs: Vec<_> = argv.iter().map(|c| c.as_ptr()).collect();
        argv_ptrs.push(std::ptr::null());
        let mut envp_ptrs: Vec<_> = envp.iter().map(|c| c.as_ptr()).collect();
        envp_ptrs.push(std::ptr::null());
        let cwd = cmd.cwd.map(Path::as_os_str).unwrap_or(OsStr::new("/"));
        let cwd = cstring("working directory", cwd.as_bytes())?;
        let rlimits = cmd
            .rlimits
            .iter()
            .map(|r| {
                let res = resource(&r.resource)
                    .ok_or_else(|| format!("unknown rlimit resource {:?}", r.resource))?;
                Ok((
                    res,
                    libc::rlimit {
                        rlim_cur: rlim(r.soft),
                        rlim_max: rlim(r.hard),
                    },
                ))
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Plan {
            path,
            _argv: argv,
            argv_ptrs,
            _envp: envp,
            envp_ptrs,
            cwd,
            rlimits,
            uid: cmd.uid,
            gid: cmd.gid,
            set_groups: cmd.gid.is_some() && crate::sys::geteuid() == 0,
            max_fd: crate::sys::max_fd(),
            nsig: libc::SIGRTMAX() + 1,
        })
    }

    fn describe(&self, step: u32, errno: i32) -> String {
        let err = io::Error::from_raw_os_error(errno);
        let path = self.path.to_string_lossy();
        let what = match step {
            STEP_SETSID => "setsid".to_string(),
            STEP_SIGNALS => "reset signals".to_string(),
            STEP_RLIMIT => "setrlimit".to_string(),
            STEP_GROUPS => format!("setgroups {}", self.gid.unwrap_or(0)),
            STEP_GID => format!("setgid {}", self.gid.unwrap_or(0)),
            STEP_UID => format!("setuid {}", self.uid.unwrap_or(0)),
            STEP_CHDIR => format!("chdir {}", self.cwd.to_string_lossy()),
            STEP_DUP => "dup2".to_string(),
            _ => format!("exec {path}"),
        };
        format!("{what}: {err}")
    }
}

const STEP_SETSID: u32 = 1;
const STEP_SIGNALS: u32 = 2;
const STEP_RLIMIT: u32 = 3;
const STEP_GROUPS: u32 = 4;
const STEP_GID: u32 = 5;
const STEP_UID: u32 = 6;
const STEP_CHDIR: u32 = 7;
const STEP_DUP: u32 = 8;
const STEP_EXEC: u32 = 9;

/// Forks and execs `plan` in a new session (pid = pgid = sid). Returns the pid once the
/// exec succeeded, or a message naming the failed step.
pub fn spawn(plan: &Plan, stdio: &Stdio) -> Result<u32, String> {
    let (mut err_r, err_w) = std::io::pipe().map_err(|e| format!("pipe: {e}"))?;
    let err_w: OwnedFd = err_w.into();
    // Prepared before fork: the default action and the empty mask.
    // SAFETY: sigaction and sigset_t are plain old data; zero is valid for both, and a
    // zeroed sigaction has sa_sigaction == SIG_DFL (0), no flags and an empty mask.
    let dfl: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut empty: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `empty` is a valid, exclusively borrowed sigset_t.
    unsafe { libc::sigemptyset(&mut empty) };

    let affinity = pin_to_current_cpu();

    // SAFETY: the buddy is single-threaded; the child below only calls async-signal-safe
    // functions on memory prepared before the fork, then execs or _exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: we are the freshly forked child; see `child`.
        unsafe {
            child(
                plan,
                stdio,
                err_w.as_raw_fd(),
                &dfl,
                &empty,
                affinity.as_ref(),
            )
        }
    }
    let fork_err = io::Error::last_os_error();
    if let Some(orig) = &affinity {
        restore_affinity(orig);
    }
    if pid == -1 {
        return Err(format!("fork: {fork_err}"));
    }
    drop(err_w);
    let mut buf = [0u8; 8];
    let mut got = 0;
    while got < buf.len() {
        match err_r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    if got == 0 {
        return Ok(pid as u32);
    }
    crate::sys::reap_blocking(pid as u32);
    if got < buf.len() {
        return Err(format!(
            "exec {}: child failed",
            plan.path.to_string_lossy()
        ));
    }
    let step = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let errno = i32::from_ne_bytes([buf[4], buf[5], buf[6], buf[7]]);
    Err(plan.describe(step, errno))
}

/// Pins the buddy to the CPU it runs on for the duration of a fork, so the child starts on
/// the same CPU: the parent blocks on the error pipe at once and the child runs without a
/// cross-CPU wake-up (which costs milliseconds on some VMs), and the parent is woken on the
/// same CPU when the exec closes the pipe. Returns the original mask to restore.
fn pin_to_current_cpu() -> Option<libc::cpu_set_t> {
    // SAFETY: sched_getcpu has no preconditions.
    let cpu = unsafe { libc::sched_getcpu() };
    if cpu < 0 {
        return None;
    }
    let size = std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: cpu_set_t is plain old data; zero is the empty set.
    let mut orig: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `orig` is a valid out buffer of `size` bytes.
    if unsafe { libc::sched_getaffinity(0, size, &mut orig) } != 0 {
        return None;
    }
    // SAFETY: as above.
    let mut one: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` is a CPU number returned by the kernel, within the set's size.
    unsafe { libc::CPU_SET(cpu as usize, &mut one) };
    // SAFETY: `one` is a valid cpu set of `size` bytes.
    if unsafe { libc::sched_setaffinity(0, size, &one) } != 0 {
        return None;
    }
    Some(orig)
}

fn restore_affinity(orig: &libc::cpu_set_t) {
    // SAFETY: `orig` is a valid cpu set of the given size.
    unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), orig) };
}

/// The forked child: set up and exec, or report `(step, errno)` and `_exit(127)`.
///
/// # Safety
/// Must only be called in the child right after `fork` of a single-threaded process; it
/// never returns.
unsafe fn child(
    plan: &Plan,
    stdio: &Stdio,
    err_fd: RawFd,
    dfl: &libc::sigaction,
    empty: &libc::sigset_t,
    affinity: Option<&libc::cpu_set_t>,
) -> ! {
    // Reports a failed step; only async-signal-safe calls.
    let fail = |step: u32| -> ! {
        // SAFETY: __errno_location is async-signal-safe and returns this thread's errno.
        let errno = unsafe { *libc::__errno_location() };
        let mut msg = [0u8; 8];
        msg[..4].copy_from_slice(&step.to_ne_bytes());
        msg[4..].copy_from_slice(&errno.to_ne_bytes());
        // SAFETY: write on our error pipe from a valid stack buffer; _exit never returns.
        unsafe {
            libc::write(err_fd, msg.as_ptr().cast(), msg.len());
            libc::_exit(127)
        }
    };
    // SAFETY: every call below is async-signal-safe and only reads memory that was
    // prepared before the fork and stays valid (the parent's heap is copied).
    unsafe {
        if let Some(orig) = affinity {
            // Give the service the buddy's full CPU set back; errors are harmless.
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), orig);
        }
        if libc::setsid() == -1 {
            fail(STEP_SETSID);
        }
        // The raw syscall, not glibc's sigaction: glibc refuses to touch the signals it
        // reserves (32, 33), which may arrive ignored from whoever started the buddy. An
        // all-zero kernel sigaction is SIG_DFL with no flags and an empty mask.
        let dfl_k = [0u64; 8];
        for sig in 1..plan.nsig {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                let r = libc::syscall(
                    libc::SYS_rt_sigaction,
                    sig,
                    dfl_k.as_ptr(),
                    std::ptr::null::<u64>(),
                    (plan.nsig / 8) as libc::size_t,
                );
                if r != 0 {
                    // Fall back to the libc call; errors are irrelevant here.
                    libc::sigaction(sig, dfl, std::ptr::null_mut());
                }
            }
        }
        if libc::sigprocmask(libc::SIG_SETMASK, empty, std::ptr::null_mut()) == -1 {
            fail(STEP_SIGNALS);
        }
        for (res, lim) in &plan.rlimits {
            if libc::setrlimit(*res, lim) == -1 {
                fail(STEP_RLIMIT);
            }
        }
        if let Some(gid) = plan.gid {
            if plan.set_groups && libc::setgroups(1, &gid) == -1 {
                fail(STEP_GROUPS);
            }
            if libc::setgid(gid) == -1 {
                fail(STEP_GID);
            }
        }
        if let Some(uid) = plan.uid
            && libc::setuid(uid) == -1
        {
            fail(STEP_UID);
        }
        if libc::chdir(plan.cwd.as_ptr()) == -1 {
            fail(STEP_CHDIR);
        }
        if libc::dup2(stdio.stdin, 0) == -1
            || libc::dup2(stdio.stdout, 1) == -1
            || libc::dup2(stdio.stderr, 2) == -1
        {
            fail(STEP_DUP);
        }
        // Mark every other descriptor close-on-exec (the error pipe already is, so it
        // closes exactly when the exec succeeds).
        let r = libc::syscall(
            libc::SYS_close_range,
            3 as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        );
        if r != 0 {
            for fd in 3..plan.max_fd {
                libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
            }
        }
        libc::execve(
            plan.path.as_ptr(),
            plan.argv_ptrs.as_ptr(),
            plan.envp_ptrs.as_ptr(),
        );
    }
    fail(STEP_EXEC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_through_path_of_env() {
        let env = vec![("PATH".to_string(), "/nonexistent:/bin:/usr/bin".to_string())];
        let p = resolve("sh", &env).expect("sh in /bin or /usr/bin");
        assert!(p.ends_with("sh"));
        assert!(resolve("definitely-not-a-program-xyz", &env).is_err());
        assert_eq!(resolve("./x", &env), Ok(PathBuf::from("./x")));
    }

    #[test]
    fn rejects_unknown_rlimit() {
        let argv = vec!["/bin/true".to_string()];
        let rl = vec![reeve_proto::buddy::Rlimit {
            resource: "bogus".into(),
            soft: 1,
            hard: 1,
        }];
        let cmd = Command {
            argv: &argv,
            env: &[],
            cwd: None,
            uid: None,
            gid: None,
            rlimits: &rl,
        };
        assert!(Plan::prepare(&cmd).is_err());
    }
}
