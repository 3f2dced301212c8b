//! `reeve-buddy`: the per-service monitor (DESIGN §2.3).
//!
//! `reeve-buddy --dir RUN_DIR [--foreground|--detach] [--start|--no-start] [--spec-stdin]
//! [--resume]`
//!
//! `--spec-stdin`: the spec comes on stdin (read to EOF) instead of from `RUN_DIR/spec.json`
//! (what the agent does: no spec file to create per start).
//!
//! `--resume` is what a buddy re-executes itself with (`Op::Reexec`, see
//! `daemon/reexec.rs`): it takes over from the previous program of the same process.
//!
//! The buddy changes into RUN_DIR first and uses relative paths for everything in it (so
//! the socket path never hits the 107-byte limit). Without `--foreground` it daemonizes:
//! fork; the child calls setsid, points stdio at /dev/null, sets everything up (lock, socket,
//! journal, the service unless `--no-start`) and then reports success through a pipe; the
//! parent exits 0 only then (so the socket accepts when it exits), or 1 with the child's
//! error on stderr.
//!
//! With `--detach` (what the agent uses) there is no fork: the buddy calls setsid itself
//! (its spawner made sure it is not a process-group leader), and reports readiness on its
//! original stdout — one zero byte, or the error text — before pointing it at /dev/null.
//! The spawner reads stdout to EOF. One process creation less per service at start-up.
//!
//! `reeve-buddy launch --home DIR -- reeve agent ARGS…` plays the agent's launcher instead
//! (self-update with trial boots and switch-back; see `launch/mod.rs`).

#![deny(unsafe_code)]
#![warn(clippy::undocumented_unsafe_blocks)]

mod control;
mod daemon;
mod diag;
mod journal;
mod launch;
mod logs;
mod output;
mod policy;
#[allow(unsafe_code)]
mod spawn;
#[allow(unsafe_code)]
mod sys;

use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str =
    "usage: reeve-buddy --dir RUN_DIR [--foreground|--detach] [--start|--no-start] [--spec-stdin]
                   [--resume]
       reeve-buddy launch --home DIR -- PROGRAM [ARGS...]
       reeve-buddy --version

launch: runs PROGRAM (normally `reeve agent ...`) and keeps it running; carries out the
agent's self-updates (trial boots, switch back on failure). DIR holds its state file.";

enum Cmd {
    Version,
    Help,
    Run(daemon::Options),
    Launch(launch::Options),
}

fn parse_launch(mut args: impl Iterator<Item = OsString>) -> Result<Cmd, String> {
    let mut home = None;
    while let Some(a) = args.next() {
        match a.to_str() {
            Some("--") => break,
            Some("--help" | "-h") => return Ok(Cmd::Help),
            Some("--home") => {
                home = Some(PathBuf::from(args.next().ok_or("--home needs a value")?));
            }
            Some(s) if s.starts_with("--home=") => home = Some(PathBuf::from(&s[7..])),
            _ => return Err(format!("unknown launch argument {a:?}")),
        }
    }
    let home = home.ok_or("launch needs --home DIR")?;
    let argv: Vec<OsString> = args.collect();
    if argv.is_empty() {
        return Err("launch needs the agent's command line after --".into());
    }
    Ok(Cmd::Launch(launch::Options { home, argv }))
}

fn parse_args(mut args: impl Iterator<Item = OsString>) -> Result<Cmd, String> {
    let mut args = args.by_ref().peekable();
    if args.peek().is_some_and(|a| a == "launch") {
        args.next();
        return parse_launch(args);
    }
    let mut dir = None;
    let mut foreground = false;
    let mut detach = false;
    let mut start = true;
    let mut resume = false;
    let mut spec_stdin = false;
    while let Some(a) = args.next() {
        match a.to_str() {
            Some("--version" | "-V") => return Ok(Cmd::Version),
            Some("--help" | "-h") => return Ok(Cmd::Help),
            Some("--foreground") => foreground = true,
            Some("--detach") => detach = true,
            Some("--start") => start = true,
            Some("--no-start") => start = false,
            Some("--resume") => resume = true,
            Some("--spec-stdin") => spec_stdin = true,
            Some("--dir") => {
                dir = Some(PathBuf::from(args.next().ok_or("--dir needs a value")?));
            }
            Some(s) if s.starts_with("--dir=") => dir = Some(PathBuf::from(&s[6..])),
            _ => return Err(format!("unknown argument {a:?}")),
        }
    }
    let dir = dir.ok_or("--dir is required")?;
    if foreground && detach {
        return Err("--foreground and --detach exclude each other".into());
    }
    Ok(Cmd::Run(daemon::Options {
        dir,
        foreground,
        detach,
        start,
        resume,
        spec_stdin,
    }))
}

fn main() -> ExitCode {
    let opts = match parse_args(std::env::args_os().skip(1)) {
        Ok(Cmd::Version) => {
            println!("reeve-buddy {}", daemon::VERSION);
            return ExitCode::SUCCESS;
        }
        Ok(Cmd::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(Cmd::Run(o)) => o,
        Ok(Cmd::Launch(o)) => return launch::run(o),
        Err(e) => {
            eprintln!("reeve-buddy: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = std::env::set_current_dir(&opts.dir) {
        eprintln!("reeve-buddy: cannot enter {}: {e}", opts.dir.display());
        return ExitCode::FAILURE;
    }
    if opts.resume {
        // This process was a buddy that re-executed itself: already detached, stdio on
        // /dev/null, the service its child.
        return match daemon::Buddy::resume(&opts) {
            Ok(mut b) => {
                b.sync_journal();
                ExitCode::from(b.run())
            }
            Err(e) => {
                eprintln!("reeve-buddy: cannot resume after a re-exec: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if opts.foreground {
        return match daemon::Buddy::prepare(&opts) {
            Ok(mut b) => {
                b.sync_journal();
                ExitCode::from(b.run())
            }
            Err(e) => {
                eprintln!("reeve-buddy: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if opts.detach {
        return detach(&opts);
    }
    daemonize(&opts)
}

/// `--detach`: a new session without forking; readiness on the original stdout.
fn detach(opts: &daemon::Options) -> ExitCode {
    use std::os::fd::AsFd;
    if sys::setsid().is_err() {
        // A process-group leader cannot start a session: fall back to forking.
        return daemonize(opts);
    }
    let mut ready = match std::io::stdout().as_fd().try_clone_to_owned() {
        Ok(fd) => std::fs::File::from(fd),
        Err(e) => {
            eprintln!("reeve-buddy: stdout: {e}");
            return ExitCode::FAILURE;
        }
    };
    match daemon::Buddy::prepare(opts) {
        Ok(mut b) => {
            let _ = ready.write_all(&[0]);
            drop(ready);
            b.sync_journal();
            ExitCode::from(b.run())
        }
        Err(e) => {
            let _ = ready.write_all(e.as_bytes());
            ExitCode::FAILURE
        }
    }
}

/// Forks; the parent waits for the child's "ready" byte (0) or its error text.
fn daemonize(opts: &daemon::Options) -> ExitCode {
    let (mut ready_r, mut ready_w) = match std::io::pipe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("reeve-buddy: pipe: {e}");
            return ExitCode::FAILURE;
        }
    };
    match sys::fork_daemon() {
        Err(e) => {
            eprintln!("reeve-buddy: fork: {e}");
            ExitCode::FAILURE
        }
        Ok(sys::Forked::Parent) => {
            drop(ready_w);
            let mut first = [0u8; 1];
            match ready_r.read(&mut first) {
                Ok(1) if first[0] == 0 => ExitCode::SUCCESS,
                Ok(1) => {
                    let mut rest = Vec::new();
                    let _ = ready_r.read_to_end(&mut rest);
                    let mut msg = first.to_vec();
                    msg.extend(rest);
                    eprintln!("reeve-buddy: {}", String::from_utf8_lossy(&msg));
                    ExitCode::FAILURE
                }
                _ => {
                    eprintln!(
                        "reeve-buddy: the buddy failed to start (see {}/buddy.log)",
                        opts.dir.display()
                    );
                    ExitCode::FAILURE
                }
            }
        }
        Ok(sys::Forked::Child) => {
            drop(ready_r);
            if let Err(e) = sys::setsid() {
                let _ = write!(ready_w, "setsid: {e}");
                return ExitCode::FAILURE;
            }
            match daemon::Buddy::prepare(opts) {
                Ok(mut b) => {
                    let _ = ready_w.write_all(&[0]);
                    drop(ready_w);
                    b.sync_journal();
                    ExitCode::from(b.run())
                }
                Err(e) => {
                    let _ = ready_w.write_all(e.as_bytes());
                    ExitCode::FAILURE
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: &[&str]) -> Result<Cmd, String> {
        parse_args(v.iter().map(OsString::from))
    }

    #[test]
    fn args() {
        assert!(matches!(parse(&["--version"]), Ok(Cmd::Version)));
        assert!(parse(&[]).is_err());
        assert!(parse(&["--dir"]).is_err());
        assert!(parse(&["--bogus"]).is_err());
        match parse(&["--dir", "/x", "--no-start", "--foreground"]) {
            Ok(Cmd::Run(o)) => {
                assert_eq!(o.dir, PathBuf::from("/x"));
                assert!(!o.start && o.foreground);
            }
            _ => panic!("expected run"),
        }
        match parse(&["--dir=/y"]) {
            Ok(Cmd::Run(o)) => {
                assert!(o.start && !o.foreground && o.dir == std::path::Path::new("/y"))
            }
            _ => panic!("expected run"),
        }
    }
}
