//! Thin, safe wrappers over the libc calls the buddy needs outside of fork/exec of the
//! service: signal masks and signalfd, poll, kill, waitpid, descriptor flags, and the
//! daemonizing fork. Everything unsafe outside `spawn.rs` lives here, each block with its
//! `SAFETY:` argument.

use reeve_proto::buddy::ExitStatus;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// Converts a libc `-1`-on-error return value into an `io::Result`.
fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Signals the buddy handles through its signalfd. SIGPIPE is only drained and ignored.
pub const HANDLED_SIGNALS: [libc::c_int; 5] = [
    libc::SIGCHLD,
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGPIPE,
];

/// Blocks `signals` for the process and returns a non-blocking, close-on-exec signalfd that
/// receives them instead.
pub fn signalfd_for(signals: &[libc::c_int]) -> io::Result<OwnedFd> {
    // SAFETY: sigset_t is plain old data; an all-zero value is a valid argument for
    // sigemptyset, which fully initialises it.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, exclusively borrowed sigset_t.
    cvt(unsafe { libc::sigemptyset(&mut set) })?;
    for &s in signals {
        // SAFETY: as above; `s` is a valid signal number from our constant list.
        cvt(unsafe { libc::sigaddset(&mut set, s) })?;
    }
    // SAFETY: `set` is initialised; a null old-set pointer is allowed. The buddy is
    // single-threaded, so the process mask is this thread's mask.
    cvt(unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) })?;
    // SAFETY: -1 asks for a new descriptor; `set` is initialised; flags are valid.
    let fd = cvt(unsafe { libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) })?;
    // SAFETY: signalfd returned a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Reads every pending signal from a non-blocking signalfd.
pub fn read_signals(fd: BorrowedFd<'_>) -> io::Result<Vec<u32>> {
    let mut out = Vec::new();
    const N: usize = 8;
    let size = std::mem::size_of::<libc::signalfd_siginfo>();
    loop {
        // SAFETY: signalfd_siginfo is plain old data; zero is a valid bit pattern.
        let mut infos: [libc::signalfd_siginfo; N] = unsafe { std::mem::zeroed() };
        // SAFETY: the buffer is valid for N * size bytes and exclusively borrowed.
        let r = unsafe { libc::read(fd.as_raw_fd(), infos.as_mut_ptr().cast(), N * size) };
        if r < 0 {
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::WouldBlock => return Ok(out),
                io::ErrorKind::Interrupted => continue,
                _ => return Err(e),
            }
        }
        let n = r as usize / size;
        out.extend(infos.iter().take(n).map(|i| i.ssi_signo));
        if n < N {
            return Ok(out);
        }
    }
}

/// poll(2). An interrupted call reports zero ready descriptors.
pub fn poll(fds: &mut [libc::pollfd], timeout_ms: i32) -> io::Result<usize> {
    // SAFETY: `fds` is a valid, exclusively borrowed slice of pollfd of the given length.
    let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(0);
        }
        return Err(e);
    }
    Ok(r as usize)
}

/// True when the peer of a connected socket has hung up (or the socket is in error).
pub fn peer_hung_up(fd: BorrowedFd<'_>) -> bool {
    let mut p = [libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN | libc::POLLRDHUP,
        revents: 0,
    }];
    match poll(&mut p, 0) {
        Ok(_) => p[0].revents & (libc::POLLHUP | libc::POLLRDHUP | libc::POLLERR) != 0,
        Err(_) => true,
    }
}

/// kill(2): sends `sig` to `pid` (negative: to a process group; 0: only checks).
pub fn kill(pid: i32, sig: i32) -> io::Result<()> {
    // SAFETY: kill has no memory-safety preconditions.
    cvt(unsafe { libc::kill(pid, sig) }).map(|_| ())
}

/// True while any process of the group `pgid` exists (zombies included).
pub fn group_exists(pgid: u32) -> bool {
    match kill(-(pgid as i32), 0) {
        Ok(()) => true,
        Err(e) => e.raw_os_error() == Some(libc::EPERM),
    }
}

/// Reaps one exited child of any pid without blocking: `Some((pid, raw status))`, or `None`
/// when no child has changed state (or there are no children).
pub fn reap_any() -> Option<(u32, libc::c_int)> {
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: `status` is a valid out pointer; WNOHANG never blocks.
        let r = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if r > 0 {
            return Some((r as u32, status));
        }
        if r < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        return None;
    }
}

/// Blocks until `pid` has exited and reaps it (used for a child that failed to exec).
pub fn reap_blocking(pid: u32) {
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: `status` is a valid out pointer; `pid` is our own child.
        let r = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, 0) };
        if r < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        return;
    }
}

/// Decodes a raw wait status.
pub fn exit_status(raw: libc::c_int) -> ExitStatus {
    if libc::WIFEXITED(raw) {
        ExitStatus {
            code: Some(libc::WEXITSTATUS(raw)),
            signal: None,
        }
    } else if libc::WIFSIGNALED(raw) {
        ExitStatus {
            code: None,
            signal: Some(libc::WTERMSIG(raw)),
        }
    } else {
        ExitStatus {
            code: None,
            signal: None,
        }
    }
}

/// Puts a descriptor into non-blocking mode.
pub fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: F_GETFL on a valid borrowed descriptor.
    let flags = cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) })?;
    // SAFETY: F_SETFL with flags derived from F_GETFL on the same valid descriptor.
    cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) })?;
    Ok(())
}

/// True if `fd` is an open descriptor of this process.
pub fn fd_is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD only inspects the descriptor table; an unused number yields EBADF.
    unsafe { libc::fcntl(fd, libc::F_GETFD) != -1 }
}

/// dup2(2): makes `target` a copy of `src` (without close-on-exec).
pub fn dup_onto(src: BorrowedFd<'_>, target: RawFd) -> io::Result<()> {
    // SAFETY: `src` is a valid descriptor; replacing `target` is the caller's intent (it is
    // one of the standard descriptors, which no Rust object owns exclusively).
    cvt(unsafe { libc::dup2(src.as_raw_fd(), target) }).map(|_| ())
}

/// A pipe for a child to write to: the read end is close-on-exec and non-blocking, the
/// write end is inherited by the next exec (the caller closes its own copy after spawning).
pub fn inheritable_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` is a valid out array of two descriptors.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: pipe2 returned two fresh descriptors that nothing else owns.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    set_nonblocking(read.as_fd())?;
    // SAFETY: F_SETFD on a valid descriptor we own; 0 clears close-on-exec.
    cvt(unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETFD, 0) })?;
    Ok((read, write))
}

/// Prepares the child that `cmd` spawns: an empty signal mask (the caller blocks the
/// signals its signalfd reads, and a mask survives exec) and `sig` when this process dies,
/// so an agent never outlives its launcher unsupervised.
pub fn child_of_launcher(cmd: &mut std::process::Command, sig: libc::c_int) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the forked child before exec and only calls
    // sigemptyset, sigprocmask and prctl, which are async-signal-safe and touch only the
    // child's own stack.
    unsafe {
        cmd.pre_exec(move || {
            let mut set: libc::sigset_t = std::mem::zeroed();
            cvt(libc::sigemptyset(&mut set))?;
            cvt(libc::sigprocmask(
                libc::SIG_SETMASK,
                &set,
                std::ptr::null_mut(),
            ))?;
            cvt(libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong))?;
            Ok(())
        });
    }
}

/// Sets or clears close-on-exec on `fd`.
pub fn set_cloexec(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    let flag = if on { libc::FD_CLOEXEC } else { 0 };
    // SAFETY: F_SETFD on a valid borrowed descriptor.
    cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, flag) }).map(|_| ())
}

/// A close-on-exec duplicate of stdin, to read it without std's `Stdin`, whose 8 KiB buffer
/// would stay allocated (and resident) for the buddy's lifetime.
pub fn dup_stdin() -> io::Result<std::fs::File> {
    // SAFETY: F_DUPFD_CLOEXEC on descriptor 0 has no memory effects; it fails (checked by
    // `cvt`) if 0 is not open.
    let fd = cvt(unsafe { libc::fcntl(0, libc::F_DUPFD_CLOEXEC, 3) })?;
    // SAFETY: `fd` was just returned by fcntl, so it is open and owned by nobody else.
    Ok(std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// Takes ownership of descriptor `fd` inherited across an exec (a re-executed buddy's
/// handoff); `None` if it is not open. Marks it close-on-exec again.
pub fn adopt_fd(fd: RawFd) -> Option<OwnedFd> {
    if fd < 3 || !fd_is_open(fd) {
        return None;
    }
    // SAFETY: the handoff names descriptors the previous program of this process kept open
    // for us; nothing else in this fresh process owns them (checked open just above).
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let _ = set_cloexec(owned.as_fd(), true);
    Some(owned)
}

/// execv(2) of `path` with `args` (argv[0] included) and the current environment, keeping
/// the signal mask (a pending SIGCHLD or SIGTERM stays pending for the new program). Returns
/// only on failure.
pub fn exec(path: &std::ffi::CStr, args: &[&std::ffi::CStr]) -> io::Error {
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    // SAFETY: `path` and every argument are NUL-terminated strings that outlive the call;
    // `argv` is NULL-terminated. On success execv does not return.
    unsafe { libc::execv(path.as_ptr(), argv.as_ptr()) };
    io::Error::last_os_error()
}

/// Result of [`fork_daemon`].
pub enum Forked {
    /// In the parent.
    Parent,
    /// In the child.
    Child,
}

/// fork(2) for daemonizing. Must only be called while the process is single-threaded.
pub fn fork_daemon() -> io::Result<Forked> {
    // SAFETY: the buddy is single-threaded when this is called (it runs before the event
    // loop and spawns no threads), so the child may keep running arbitrary Rust code.
    let r = unsafe { libc::fork() };
    match r {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Forked::Child),
        _ => Ok(Forked::Parent),
    }
}

/// setsid(2): makes the calling process a session and group leader.
pub fn setsid() -> io::Result<()> {
    // SAFETY: setsid has no memory-safety preconditions.
    cvt(unsafe { libc::setsid() }).map(|_| ())
}

/// Field 22 of /proc/self/stat: the process start time in clock ticks since boot.
pub fn self_start_ticks() -> io::Result<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    parse_start_ticks(&stat).ok_or_else(|| io::Error::other("cannot parse /proc/self/stat"))
}

/// Parses field 22 (starttime) of a /proc/PID/stat line; fields count after the last `)`.
pub fn parse_start_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // After ')' comes field 3 (state); starttime is field 22, i.e. index 19 here.
    rest.split_ascii_whitespace().nth(19)?.parse().ok()
}

/// The kernel boot id, trimmed.
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Effective uid of the buddy.
pub fn geteuid() -> u32 {
    // SAFETY: geteuid cannot fail and has no preconditions.
    unsafe { libc::geteuid() }
}

/// Soft limit of open files, capped (for the close-every-descriptor fallback).
pub fn max_fd() -> i32 {
    // SAFETY: rlimit is plain old data.
    let mut rl: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: `rl` is a valid out pointer.
    let r = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) };
    if r != 0 || rl.rlim_cur == libc::RLIM_INFINITY {
        return 65_536;
    }
    rl.rlim_cur.min(65_536) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_ticks_parse_after_last_paren() {
        let line = "123 (we ird) name)) S 1 123 123 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(parse_start_ticks(line), Some(987_654));
        assert!(self_start_ticks().is_ok());
    }

    #[test]
    fn exit_status_decodes() {
        assert_eq!(exit_status(3 << 8).code, Some(3));
        assert_eq!(exit_status(9).signal, Some(9));
    }
}
