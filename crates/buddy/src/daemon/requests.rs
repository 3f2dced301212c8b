//! The controller side of the event loop: accepting (one controller at a time), reading
//! requests and carrying them out. A child module of `daemon`, so it works on the buddy's
//! private state directly.

use super::{After, Buddy, Svc, VERSION};
use crate::control::{Conn, Incoming};
use crate::sys;
use reeve_proto::buddy::{
    BuddyEvent, BuddySpec, Frame, Op, PROTOCOL_VERSION, Reply, Request, files,
};
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::net::UnixStream;

impl Buddy {
    pub(super) fn on_accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if self.conn.as_ref().is_some_and(Conn::is_dead) {
                        self.drop_conn("replaced: peer hung up");
                    }
                    if self.conn.is_some() {
                        refuse(stream);
                        continue;
                    }
                    match Conn::new(stream) {
                        Ok(c) => self.conn = Some(c),
                        Err(e) => self.diag.log(&format!("accept: {e}")),
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.diag.log(&format!("accept: {e}"));
                    break;
                }
            }
        }
    }

    pub(super) fn on_conn(&mut self, revents: i16) {
        let Some(c) = self.conn.as_mut() else {
            return;
        };
        if self.scratch.len() < 16 << 10 {
            self.scratch.resize(16 << 10, 0);
        }
        let mut incoming = Vec::new();
        let res = c.read(&mut self.scratch, &mut incoming);
        for inc in incoming {
            if self.conn.is_none() {
                break;
            }
            match inc {
                Incoming::Request(r) => self.on_request(r),
                Incoming::Bad(id, message) => self.reply(id, Reply::Error { message }),
            }
        }
        match res {
            Ok(true) => {
                if revents & libc::POLLOUT != 0
                    && let Some(c) = self.conn.as_mut()
                    && let Err(e) = c.flush()
                {
                    self.drop_conn(&e);
                }
            }
            Ok(false) => {
                if self.conn.is_some() {
                    self.drop_conn("controller hung up");
                }
            }
            Err(e) => self.drop_conn(&e),
        }
    }

    fn on_request(&mut self, req: Request) {
        let Request { id, op } = req;
        let hello = self.conn.as_ref().is_some_and(|c| c.hello);
        if !hello && !matches!(op, Op::Hello { .. }) {
            let message = "the first request must be hello".to_string();
            return self.reply(id, Reply::Error { message });
        }
        let reply = match op {
            Op::Hello {
                protocol,
                controller,
                after_seq,
            } => return self.on_hello(id, protocol, &controller, after_seq),
            Op::Status => Reply::Status(Box::new(self.status())),
            Op::Start => {
                self.request_start();
                Reply::Ok
            }
            Op::Stop => {
                self.stop_service(After::Stop);
                Reply::Ok
            }
            Op::Restart => {
                self.stop_service(After::Restart);
                Reply::Ok
            }
            Op::Signal { signal } => self.signal(signal),
            Op::SetSpec { spec } => self.set_spec(*spec),
            Op::Ack { seq } => {
                if let Err(e) = self.journal.ack(seq) {
                    self.diag
                        .log(&format!("journal: compaction after ack {seq}: {e}"));
                }
                Reply::Ok
            }
            Op::Shutdown => {
                self.diag.log("shutdown requested");
                self.stop_service(After::Exit);
                Reply::Ok
            }
            Op::Reexec { path } => self.on_reexec(path),
        };
        self.reply(id, reply);
    }

    fn on_hello(&mut self, id: u64, protocol: u32, controller: &str, after_seq: u64) {
        if protocol < PROTOCOL_VERSION {
            let message =
                format!("controller protocol {protocol} is older than {PROTOCOL_VERSION}");
            return self.reply(id, Reply::Error { message });
        }
        // The first controller of a fresh buddy is its spawner and not worth a line (nor
        // the creation of buddy.log at every start); a later one is (see `detach`).
        if self.attached_once || !self.fresh {
            self.diag.log(&format!(
                "controller {controller:?} attached (protocol {protocol}, after seq {after_seq})"
            ));
        }
        self.attached_once = true;
        if let Some(c) = self.conn.as_mut() {
            c.hello = true;
        }
        let status = Box::new(self.status());
        self.reply(
            id,
            Reply::Welcome {
                protocol: PROTOCOL_VERSION,
                version: VERSION.to_string(),
                status,
            },
        );
        match self.journal.entries_after(after_seq) {
            Ok(entries) => {
                for e in entries {
                    if self.conn.is_none() {
                        break;
                    }
                    self.send(Frame::Event(e));
                }
            }
            Err(e) => self.diag.log(&format!("journal: replay: {e}")),
        }
    }

    fn signal(&mut self, signal: i32) -> Reply {
        let pid = match &self.svc {
            Svc::Running(c) | Svc::Stopping { child: c, .. } => c.pid,
            _ => {
                return Reply::Error {
                    message: "service is not running".into(),
                };
            }
        };
        match sys::kill(-(pid as i32), signal) {
            Ok(()) => {
                self.record(BuddyEvent::Signalled { pid, signal });
                Reply::Ok
            }
            Err(e) => Reply::Error {
                message: format!("signal {signal} to process group {pid}: {e}"),
            },
        }
    }

    fn set_spec(&mut self, spec: BuddySpec) -> Reply {
        if spec.argv.is_empty() || spec.argv[0].is_empty() {
            return Reply::Error {
                message: "spec.argv is empty".into(),
            };
        }
        if let Err(message) = write_spec(&spec) {
            return Reply::Error { message };
        }
        self.spec = spec;
        self.plan = None;
        self.record(BuddyEvent::SpecChanged);
        Reply::Ok
    }
}

/// Tells a second controller why it cannot attach, then closes it.
fn refuse(mut stream: UnixStream) {
    let frame = Frame::Reply {
        id: 0,
        reply: Reply::Error {
            message: "another controller is attached".into(),
        },
    };
    if stream.set_nonblocking(true).is_ok()
        && let Ok(mut line) = serde_json::to_vec(&frame)
    {
        line.push(b'\n');
        let _ = stream.write_all(&line);
    }
}

/// Writes the spec atomically: temp file, fsync, rename, directory fsync.
pub(super) fn write_spec(spec: &BuddySpec) -> Result<(), String> {
    let data = serde_json::to_vec_pretty(spec).map_err(|e| format!("serialize spec: {e}"))?;
    let tmp = format!("{}.tmp", files::SPEC);
    let res = (|| -> io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(&data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, files::SPEC)?;
        File::open(".")?.sync_all()
    })();
    res.map_err(|e| format!("write {}: {e}", files::SPEC))
}
