//! End-to-end tests of `reeve-buddy`: real processes, real signals, a real socket.

#![allow(unsafe_code)]

mod common;

use common::*;
use reeve_proto::buddy::{BuddyEvent, ExitStatus, Op, ProcState, Reply, RestartMode, files};
use std::process::Command;
use std::time::{Duration, Instant};

fn exited(k: &BuddyEvent) -> bool {
    matches!(k, BuddyEvent::Exited { .. })
}

#[test]
fn version_flag() {
    let out = Command::new(BIN).arg("--version").output().expect("run");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("reeve-buddy "));
}

#[test]
fn start_then_kill9_restarts_with_a_new_pid() {
    let b = Buddy::start(|d| spec(d, "exec sleep 100"), &[]);
    let (mut c, st) = b.attach();
    assert_eq!(st.buddy_pid, b.pid);
    assert!(st.buddy_start_ticks > 0);
    assert!(!st.boot_id.is_empty());
    c.wait_event("buddy started", T, |k| {
        matches!(k, BuddyEvent::BuddyStarted { .. })
    });
    let pid = c.started();
    assert!(alive(pid));
    assert_eq!(c.status().state, ProcState::Running);
    assert!(kill(pid as i32, libc::SIGKILL));
    let ex = c.wait_event("exited", T, exited);
    match ex.kind {
        BuddyEvent::Exited {
            pid: p,
            status,
            expected,
            ..
        } => {
            assert_eq!(p, pid);
            assert_eq!(status.signal, Some(9));
            assert!(!expected);
        }
        _ => unreachable!(),
    }
    let st = c.wait_event("restart", T, |k| matches!(k, BuddyEvent::Started { .. }));
    let BuddyEvent::Started { pid: pid2, restart } = st.kind else {
        unreachable!()
    };
    assert_ne!(pid2, pid);
    assert_eq!(restart, 1);
    assert!(alive(pid2));
    eprintln!("exit → restart: {} ms", st.ts_ms - ex.ts_ms);
    assert!(st.ts_ms - ex.ts_ms < 200);
    let s = c.status();
    assert_eq!(s.pid, Some(pid2));
    assert_eq!(s.restarts, 1);
    assert_eq!(s.consecutive_failures, 1);
    assert_eq!(
        s.last_exit,
        Some(ExitStatus {
            code: None,
            signal: Some(9)
        })
    );
}

#[test]
fn crash_loop_fails_after_max_consecutive_failures_with_growing_backoff() {
    let b = Buddy::start(
        |d| {
            let mut s = spec(d, "exit 3");
            s.restart.backoff_initial_ms = 50;
            s.restart.backoff_multiplier = 2.0;
            s.restart.max_consecutive_failures = Some(3);
            s
        },
        &[],
    );
    let (mut c, _) = b.attach();
    let mut delays = Vec::new();
    let mut last_backoff_ts = 0;
    for _ in 0..2 {
        c.started();
        c.wait_event("exited", T, exited);
        let e = c.wait_event("backing off", T, |k| {
            matches!(k, BuddyEvent::BackingOff { .. })
        });
        let BuddyEvent::BackingOff { delay_ms, failures } = e.kind else {
            unreachable!()
        };
        delays.push((delay_ms, failures));
        last_backoff_ts = e.ts_ms;
    }
    assert_eq!(delays, vec![(50, 1), (100, 2)]);
    let s = c.wait_event("third start", T, |k| {
        matches!(k, BuddyEvent::Started { .. })
    });
    assert!(
        s.ts_ms >= last_backoff_ts + 100,
        "restarted after {} ms, before the 100 ms back-off",
        s.ts_ms - last_backoff_ts
    );
    let f = c.wait_event("failed", T, |k| {
        matches!(k, BuddyEvent::Failed { .. } | BuddyEvent::BackingOff { .. })
    });
    assert!(matches!(f.kind, BuddyEvent::Failed { .. }), "{f:?}");
    let st = c.status();
    assert_eq!(st.state, ProcState::Failed);
    assert_eq!(st.consecutive_failures, 3);
    // Start clears the failure.
    assert_eq!(c.request(Op::Start), Reply::Ok);
    c.started();
}

#[test]
fn healthy_window_resets_the_backoff() {
    let script = "n=$(cat count 2>/dev/null || echo 0); n=$((n+1)); echo $n > count; \
                  if [ $n -ge 3 ]; then sleep 0.6; fi; exit 1";
    let b = Buddy::start(
        |d| {
            let mut s = spec(d, script);
            s.restart.backoff_initial_ms = 50;
            s.restart.reset_after_ms = 300;
            s
        },
        &[],
    );
    let (mut c, _) = b.attach();
    let mut got = Vec::new();
    for _ in 0..3 {
        let e = c.wait_event("backing off", T, |k| {
            matches!(k, BuddyEvent::BackingOff { .. })
        });
        let BuddyEvent::BackingOff { delay_ms, failures } = e.kind else {
            unreachable!()
        };
        got.push((delay_ms, failures));
    }
    assert_eq!(got, vec![(50, 1), (100, 2), (50, 1)]);
}

#[test]
fn healthy_window_timer_resets_the_count_while_running() {
    let script = "n=$(cat count 2>/dev/null || echo 0); n=$((n+1)); echo $n > count; \
                  if [ $n -ge 2 ]; then exec sleep 100; fi; exit 1";
    let b = Buddy::start(
        |d| {
            let mut s = spec(d, script);
            s.restart.reset_after_ms = 200;
            s
        },
        &[],
    );
    let (mut c, _) = b.attach();
    c.started();
    c.started();
    assert_eq!(c.status().consecutive_failures, 1);
    wait_until("failure count reset", T, || {
        c.status().consecutive_failures == 0
    });
}

#[test]
fn stop_kills_the_whole_group_after_the_timeout() {
    // The shell and its grandchild both ignore SIGTERM.
    let script = "trap '' TERM; sleep 100 & echo $! > gc.pid; wait";
    let b = Buddy::start(
        |d| {
            let mut s = spec(d, script);
            s.stop.kill_timeout_ms = 300;
            s
        },
        &[],
    );
    let (mut c, _) = b.attach();
    let pid = c.started();
    let gc_file = b.path().join("gc.pid");
    wait_until("grandchild pid", T, || {
        std::fs::read_to_string(&gc_file).is_ok_and(|s| s.ends_with('\n'))
    });
    let gc: u32 = std::fs::read_to_string(&gc_file)
        .expect("gc")
        .trim()
        .parse()
        .expect("pid");
    assert!(alive(gc));
    let t0 = Instant::now();
    assert_eq!(c.request(Op::Stop), Reply::Ok);
    c.wait_event(
        "stopping",
        T,
        |k| matches!(k, BuddyEvent::Stopping { signal, .. } if *signal == libc::SIGTERM),
    );
    c.wait_event(
        "killed",
        T,
        |k| matches!(k, BuddyEvent::Killed { pid: p } if *p == pid),
    );
    assert!(t0.elapsed() >= Duration::from_millis(290));
    let e = c.wait_event("exited", T, exited);
    let BuddyEvent::Exited {
        status, expected, ..
    } = e.kind
    else {
        unreachable!()
    };
    assert!(expected);
    assert_eq!(status.signal, Some(9));
    c.wait_event("stopped", T, |k| matches!(k, BuddyEvent::Stopped));
    wait_until("grandchild dead", T, || !alive(gc));
    assert!(!alive(pid));
    assert_eq!(c.status().state, ProcState::Stopped);
}

#[test]
fn stop_kills_group_members_left_after_the_leader_exits() {
    // The leader dies on SIGTERM at once; the grandchild ignores it.
    let script = "(trap '' TERM; exec sleep 100) & echo $! > gc.pid; wait";
    let b = Buddy::start(|d| spec(d, script), &[]);
    let (mut c, _) = b.attach();
    c.started();
    let gc_file = b.path().join("gc.pid");
    wait_until("grandchild pid", T, || {
        std::fs::read_to_string(&gc_file).is_ok_and(|s| s.ends_with('\n'))
    });
    let gc: u32 = std::fs::read_to_string(&gc_file)
        .expect("gc")
        .trim()
        .parse()
        .expect("pid");
    // Let the grandchild install its ignore before we stop.
    std::thread::sleep(Duration::from_millis(100));
    assert!(alive(gc));
    let t0 = Instant::now();
    assert_eq!(c.request(Op::Stop), Reply::Ok);
    c.wait_event("stopped", T, |k| matches!(k, BuddyEvent::Stopped));
    assert!(
        t0.elapsed() < Duration::from_millis(2_500),
        "waited for the kill timeout"
    );
    wait_until("grandchild dead", T, || !alive(gc));
}

#[test]
fn hello_after_seq_replays_what_was_missed() {
    let b = Buddy::start(|d| spec(d, "exec sleep 100"), &[]);
    let (mut c, _) = b.attach();
    let pid = c.started();
    let last = c.status().journal_seq;
    drop(c);
    assert!(kill(pid as i32, libc::SIGKILL));
    // Wait until the restart is journaled, with nobody attached.
    wait_until("restart journaled", T, || {
        b.journal()
            .iter()
            .any(|e| matches!(e.kind, BuddyEvent::Started { pid: p, .. } if p != pid))
    });
    let mut c = b.client();
    let st = c.hello(last);
    assert!(st.journal_seq > last);
    let e = c.wait_event("replayed exit", T, exited);
    assert!(e.seq > last);
    let s = c.wait_event("replayed start", T, |k| {
        matches!(k, BuddyEvent::Started { .. })
    });
    assert!(s.seq > e.seq);
}

#[test]
fn replay_contains_exactly_the_entries_after_seq() {
    let b = Buddy::start(|d| spec(d, "exec sleep 100"), &[]);
    let (mut c, _) = b.attach();
    let pid = c.started();
    drop(c);
    assert!(kill(pid as i32, libc::SIGKILL));
    wait_until("restart journaled", T, || {
        b.journal()
            .iter()
            .any(|e| matches!(e.kind, BuddyEvent::Started { restart: 1, .. }))
    });
    let mut c = b.client();
    let st = c.hello(1);
    let mut seqs = Vec::new();
    while (seqs.len() as u64) < st.journal_seq - 1 {
        let e = c.wait_event("replay", T, |_| true);
        seqs.push(e.seq);
    }
    let want: Vec<u64> = (2..=st.journal_seq).collect();
    assert_eq!(seqs, want);
}

#[test]
fn second_controller_is_refused_while_the_first_is_attached() {
    let b = Buddy::start(|d| spec(d, "exec sleep 100"), &["--no-start"]);
    let (mut c1, st) = b.attach();
    assert_eq!(st.state, ProcState::Stopped);
    let mut c2 = b.client();
    let f = c2.frame(Instant::now() + T).expect("refusal frame");
    match f {
        reeve_proto::buddy::Frame::Reply {
            reply: Reply::Error { message },
            ..
        } => assert!(message.contains("another controller"), "{message}"),
        f => panic!("expected an error, got {f:?}"),
    }
    assert!(c2.frame(Instant::now() + T).is_none() && c2.eof);
    // The first one still works.
    assert_eq!(c1.status().state, ProcState::Stopped);
    drop(c1);
    // Once it hung up, a new controller takes over.
    let (mut c3, _) = b.attach();
    assert_eq!(c3.request(Op::Start), Reply::Ok);
    c3.started();
}

#[test]
fn requests_before_hello_are_refused() {
    let b = Buddy::start(|d| spec(d, "exec sleep 100"), &["--no-start"]);
    let mut c = b.client();
    assert!(matches!(c.request(Op::Status), Reply::Error { .. }));
    c.hello(0);
    assert_eq!(c.status().state, ProcState::Stopped);
}

#[test]
fn logs_are_marked_and_rotated() {
    let script = "echo out1; echo err1 >&2; printf partial; i=0; \
                  while [ $i -lt 100 ]; do echo line-$i-xxxxxxxxxxxxxxxxxxxx; i=$((i+1)); done";
    let b = Buddy::start(
        |d| {
            let mut s = spec(d, script);
            s.restart.mode = RestartMode::Never;
            s.log.max_size = 2_500;
            s.log.keep = 2;
            s
        },
        &[],
    );
    let (mut c, _) = b.attach();
    c.wait_event("stopped", T, |k| matches!(k, BuddyEvent::Stopped));
    let logs = b.path().join("logs");
    wait_until("last line logged", T, || {
        std::fs::read_to_string(logs.join("current.log")).is_ok_and(|s| s.contains("line-99-"))
    });
    assert!(logs.join("current.log.1").exists());
    assert!(logs.join("current.log.2").exists());
    assert!(!logs.join("current.log.3").exists());
    let cur = std::fs::read_to_string(logs.join("current.log")).expect("current");
    assert!(cur.len() <= 2_500);
    let first = std::fs::read_to_string(logs.join("current.log.2")).expect("oldest");
    let all = format!("{first}{cur}");
    for l in all.lines() {
        // 2026-11-21T23:05:01.123Z o line
        let b = l.as_bytes();
        assert!(l.len() > 27, "{l}");
        assert_eq!(
            (b[4], b[10], b[19], b[23], b[24]),
            (b'-', b'T', b'.', b'Z', b' ')
        );
        assert!(b[25] == b'o' || b[25] == b'e', "{l}");
    }
    let every = format!(
        "{first}{}{cur}",
        std::fs::read_to_string(logs.join("current.log.1")).expect("1")
    );
    assert!(
        every.contains(" o out1\n") && every.contains(" e err1\n"),
        "{every}"
    );
    // `printf partial` glues onto the next stdout line.
    assert!(every.contains(" o partialline-0-"), "{every}");
}

#[test]
fn a_fast_writer_is_never_blocked_without_a_controller() {
    let line = "0123456789".repeat(10);
    let script = format!("yes {line} | head -c 50000000");
    let b = Buddy::start(
        |d| {
            let mut s = spec(d, &script);
            s.restart.mode = RestartMode::Never;
            s.log.max_size = 16 << 20;
            s.log.keep = 1;
            s
        },
        &[],
    );
    wait_until("the writer to finish", Duration::from_secs(60), || {
        b.journal().iter().any(|e| exited(&e.kind))
    });
    let (mut c, _) = b.attach();
    let e = c.wait_event("exit", T, exited);
    let BuddyEvent::Exited { status, .. } = e.kind else {
        unreachable!()
    };
    assert_eq!(status.code, Some(0));
    let logs = b.path().join("logs");
    assert!(logs.join("current.log.1").exists());
    let cur = std::fs::metadata(logs.join("current.log"))
        .expect("current")
        .len();
    assert!(cur <= 16 << 20);
}

#[test]
fn log_pipe_receives_raw_lines() {
    let b = Buddy::start(
        |d| {
            let mut s = spec(d, "echo via-pipe; exec sleep 100");
            s.log.pipe = Some(format!("cat >> {}/piped", d.display()));
            s.log.to_file = false;
            s
        },
        &[],
    );
    let (mut c, _) = b.attach();
    c.started();
    let piped = b.path().join("piped");
    wait_until("piped output", T, || {
        std::fs::read_to_string(&piped).is_ok_and(|s| s == "via-pipe\n")
    });
    assert!(!b.path().join("logs/current.log").exists());
}

#[test]
fn signal_request_is_delivered_to_the_group() {
    let b = Buddy::start(
        |d| {
            let mut s = spec(d, "trap 'exit 7' USR1; sleep 100 & wait");
            s.restart.mode = RestartMode::Never;
            s
        },
        &[],
    );
    let (mut c, _) = b.attach();
    let pid = c.started();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        c.request(Op::Signal {
            signal: libc::SIGUSR1
        }),
        Reply::Ok
    );
    c.wait_event("signalled", T, |k| {
        matches!(k, BuddyEvent::Signalled { pid: p, signal } if *p == pid && *signal == libc::SIGUSR1)
    });
    let e = c.wait_event("exit", T, exited);
    let BuddyEvent::Exited { status, .. } = e.kind else {
        unreachable!()
    };
    assert_eq!(status.code, Some(7));
    c.wait_event("stopped", T, |k| matches!(k, BuddyEvent::Stopped));
    match c.request(Op::Signal { signal: 1 }) {
        Reply::Error { message } => assert!(message.contains("not running")),
        r => panic!("expected an error, got {r:?}"),
    }
}

#[test]
fn spawn_failures_are_reported_and_retried_later() {
    let b = Buddy::start(
        |d| {
            let mut s = spec(d, "");
            s.argv = vec!["/nonexistent/prog".into()];
            s
        },
        &[],
    );
    let (mut c, _) = b.attach();
    let e = c.wait_event("spawn failed", T, |k| {
        matches!(k, BuddyEvent::SpawnFailed { .. })
    });
    let BuddyEvent::SpawnFailed { error } = e.kind else {
        unreachable!()
    };
    assert!(
        error.contains("exec /nonexistent/prog") && error.contains("No such file"),
        "{error}"
    );
    let e = c.wait_event("backing off", T, |k| {
        matches!(k, BuddyEvent::BackingOff { .. })
    });
    assert!(matches!(e.kind, BuddyEvent::BackingOff { delay_ms, .. } if delay_ms >= 1_000));
    // A bad working directory names the step.
    let mut s = spec(b.path(), "true");
    s.cwd = Some("/nonexistent-dir".into());
    assert_eq!(c.request(Op::SetSpec { spec: Box::new(s) }), Reply::Ok);
    assert_eq!(c.request(Op::Start), Reply::Ok);
    let e = c.wait_event("spawn failed", T, |k| {
        matches!(k, BuddyEvent::SpawnFailed { .. })
    });
    let BuddyEvent::SpawnFailed { error } = e.kind else {
        unreachable!()
    };
    assert!(error.starts_with("chdir /nonexistent-dir"), "{error}");
    // Not found in PATH.
    let mut s = spec(b.path(), "true");
    s.argv = vec!["no-such-program-xyz".into()];
    assert_eq!(c.request(Op::SetSpec { spec: Box::new(s) }), Reply::Ok);
    assert_eq!(c.request(Op::Start), Reply::Ok);
    let e = c.wait_event("spawn failed", T, |k| {
        matches!(k, BuddyEvent::SpawnFailed { .. })
    });
    assert!(
        matches!(e.kind, BuddyEvent::SpawnFailed { error } if error.contains("not found in PATH"))
    );
}

#[test]
fn a_second_buddy_on_the_same_dir_is_refused() {
    let b = Buddy::start(|d| spec(d, "exec sleep 100"), &["--no-start"]);
    let out = Command::new(BIN)
        .arg("--dir")
        .arg(b.path())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already owns"), "{err}");
    assert!(err.contains(&b.pid.to_string()), "{err}");
    // The first one is unaffected.
    let (mut c, _) = b.attach();
    assert_eq!(c.status().buddy_pid, b.pid);
}

#[test]
fn set_spec_persists_and_applies_at_the_next_start() {
    let b = Buddy::start(|d| spec(d, "exec sleep 100"), &[]);
    let (mut c, _) = b.attach();
    c.started();
    let mut s = spec(b.path(), "exec sleep 200");
    s.service = "renamed".into();
    assert_eq!(
        c.request(Op::SetSpec {
            spec: Box::new(s.clone())
        }),
        Reply::Ok
    );
    c.wait_event("spec changed", T, |k| matches!(k, BuddyEvent::SpecChanged));
    let on_disk: reeve_proto::buddy::BuddySpec =
        serde_json::from_slice(&std::fs::read(b.path().join(files::SPEC)).expect("spec"))
            .expect("parse");
    assert_eq!(on_disk, s);
    let mut bad = s.clone();
    bad.argv.clear();
    assert!(matches!(
        c.request(Op::SetSpec {
            spec: Box::new(bad)
        }),
        Reply::Error { .. }
    ));
    assert_eq!(c.request(Op::Restart), Reply::Ok);
    let e = c.wait_event("exit", T, exited);
    assert!(matches!(e.kind, BuddyEvent::Exited { expected: true, .. }));
    let pid = c.started();
    // `started` comes right after the fork: the command line is the new one once the
    // service has exec'd (it reads empty, or the old one, for a moment before that).
    let deadline = std::time::Instant::now() + T;
    let cmdline = loop {
        let text = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if text.contains("200") || std::time::Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    assert!(cmdline.contains("200"), "{cmdline:?}");
    assert_eq!(c.status().service, "renamed");
}

#[test]
fn shutdown_stops_the_service_and_exits() {
    let b = Buddy::start(|d| spec(d, "exec sleep 100"), &[]);
    let (mut c, _) = b.attach();
    let pid = c.started();
    assert_eq!(c.request(Op::Shutdown), Reply::Ok);
    c.wait_event("stopped", T, |k| matches!(k, BuddyEvent::Stopped));
    c.wait_event("exiting", T, |k| matches!(k, BuddyEvent::BuddyExiting));
    wait_until("buddy gone", T, || !alive(b.pid));
    assert!(!alive(pid));
    assert!(!b.socket().exists());
}

#[test]
fn sigterm_to_the_buddy_stops_the_service_and_exits() {
    let b = Buddy::start(|d| spec(d, "exec sleep 100"), &[]);
    let (mut c, _) = b.attach();
    let pid = c.started();
    assert!(kill(b.pid as i32, libc::SIGTERM));
    c.wait_event("exiting", T, |k| matches!(k, BuddyEvent::BuddyExiting));
    wait_until("buddy gone", T, || !alive(b.pid));
    assert!(!alive(pid));
}

#[test]
fn foreground_mode_and_no_start() {
    let dir = tempfile::Builder::new()
        .prefix("bd")
        .tempdir_in("/tmp")
        .expect("tempdir");
    write_spec(dir.path(), &spec(dir.path(), "exec sleep 100"));
    let mut child = Command::new(BIN)
        .arg("--dir")
        .arg(dir.path())
        .args(["--foreground", "--no-start"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let mut c = Client::connect_within(&dir.path().join(files::SOCKET), T);
    let st = c.hello(0);
    assert_eq!(st.buddy_pid, child.id());
    assert_eq!(st.state, ProcState::Stopped);
    assert_eq!(c.request(Op::Start), Reply::Ok);
    let pid = c.started();
    assert_eq!(c.request(Op::Shutdown), Reply::Ok);
    let deadline = Instant::now() + T;
    loop {
        if let Some(s) = child.try_wait().expect("wait") {
            assert!(s.success());
            break;
        }
        assert!(Instant::now() < deadline, "foreground buddy did not exit");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!alive(pid));
}

#[test]
fn ack_is_accepted_and_seq_survives_a_restart_of_the_buddy() {
    let b = Buddy::start(|d| spec(d, "exec sleep 100"), &[]);
    let (mut c, _) = b.attach();
    c.started();
    let seq = c.status().journal_seq;
    assert_eq!(c.request(Op::Ack { seq }), Reply::Ok);
    // A small journal is not rewritten on every ack (compaction waits for COMPACT_AT;
    // unit-tested in journal.rs); the watermark is the last line either way.
    let j = b.journal();
    assert_eq!(j.last().map(|e| e.seq), Some(seq));
    assert_eq!(c.request(Op::Shutdown), Reply::Ok);
    wait_until("buddy gone", T, || !alive(b.pid));
    drop(c);
    // A new buddy on the same dir continues the numbering.
    let out = Command::new(BIN)
        .arg("--dir")
        .arg(b.path())
        .arg("--no-start")
        .output()
        .expect("run");
    assert!(out.status.success());
    let pid2 = read_pid(b.path());
    let mut c = b.client();
    let st = c.hello(seq);
    let e = c.wait_event("buddy started", T, |k| {
        matches!(k, BuddyEvent::BuddyStarted { .. })
    });
    assert!(e.seq > seq);
    assert!(st.journal_seq > seq);
    assert_eq!(c.request(Op::Shutdown), Reply::Ok);
    wait_until("second buddy gone", T, || !alive(pid2));
}

#[test]
fn an_idle_buddy_does_not_wake_up() {
    let b = Buddy::start(
        |d| {
            let mut s = spec(d, "exec sleep 100");
            s.restart.reset_after_ms = 50;
            s
        },
        &[],
    );
    let (mut c, _) = b.attach();
    c.started();
    drop(c);
    std::thread::sleep(Duration::from_millis(200));
    let switches = || {
        std::fs::read_to_string(format!("/proc/{}/status", b.pid))
            .expect("status")
            .lines()
            .filter(|l| l.contains("ctxt_switches"))
            .map(|l| {
                l.split_whitespace()
                    .nth(1)
                    .unwrap_or("0")
                    .parse::<u64>()
                    .unwrap_or(0)
            })
            .sum::<u64>()
    };
    let before = switches();
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(switches(), before, "the idle buddy woke up");
}

#[test]
fn the_service_gets_a_clean_session_env_rlimits_and_signals() {
    let b = Buddy::start(
        |d| {
            let mut s = spec(d, "");
            s.argv = vec!["sleep".into(), "100".into()];
            s.env.push(("ONLY_THIS".into(), "1".into()));
            s.rlimits.push(reeve_proto::buddy::Rlimit {
                resource: "nofile".into(),
                soft: 64,
                hard: 128,
            });
            s
        },
        &[],
    );
    let (mut c, _) = b.attach();
    let pid = c.started();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let f: Vec<&str> = stat[stat.rfind(')').expect(")") + 2..]
        .split_whitespace()
        .collect();
    // pgrp and session (fields 5 and 6) are the pid itself.
    assert_eq!(
        (f[2], f[3]),
        (pid.to_string().as_str(), pid.to_string().as_str())
    );
    let env = std::fs::read(format!("/proc/{pid}/environ")).expect("environ");
    assert_eq!(env, b"PATH=/usr/bin:/bin\0ONLY_THIS=1\0");
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let nofile = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("nofile");
    assert_eq!(
        nofile.split_whitespace().collect::<Vec<_>>()[3..5],
        ["64", "128"]
    );
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    for key in ["SigBlk:", "SigIgn:"] {
        let line = status.lines().find(|l| l.starts_with(key)).expect(key);
        assert!(line.ends_with("0000000000000000"), "{line}");
    }
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).expect("cwd");
    assert_eq!(cwd, b.path());
    // Only 0, 1, 2 are open, the latter two being pipes.
    let fds: Vec<_> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fds")
        .filter_map(|e| e.ok())
        .collect();
    assert_eq!(fds.len(), 3, "{fds:?}");
}

#[test]
fn a_buddy_given_its_spec_on_stdin_creates_only_its_journal_and_socket() {
    use std::io::{Read, Write};
    let dir = tempfile::Builder::new()
        .prefix("bd")
        .tempdir_in("/tmp")
        .expect("tempdir");
    let spec = spec(dir.path(), "exec sleep 100");
    // As the agent starts it: detached, spec on stdin, readiness on stdout.
    let mut child = Command::new(BIN)
        .arg("--dir")
        .arg(dir.path())
        .args(["--detach", "--start", "--spec-stdin"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run buddy");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(&serde_json::to_vec(&spec).expect("spec json"))
        .expect("write spec");
    drop(stdin);
    let mut ready = Vec::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_end(&mut ready)
        .expect("read readiness");
    assert_eq!(ready, [0], "{}", String::from_utf8_lossy(&ready));
    let b = Buddy {
        pid: read_pid(dir.path()),
        dir,
    };
    let (mut c, st) = b.attach();
    assert_eq!(st.buddy_pid, b.pid);
    assert_eq!(c.status().state, ProcState::Running);
    let mut names: Vec<String> = std::fs::read_dir(b.path())
        .expect("run dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, [files::SOCKET, files::JOURNAL]);
    // A second buddy on the same directory is refused by the directory lock.
    let out = Command::new(BIN)
        .arg("--dir")
        .arg(b.path())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already owns"));
    // `b` kills the buddy (the test's child: reaped when the test process exits).
    drop(child);
}
