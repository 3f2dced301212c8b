//! The controller connection: a non-blocking Unix stream with a read buffer split on `\n`
//! and a bounded write buffer, so a controller that stops reading can never block the loop
//! (past [`MAX_PENDING`] bytes it is dropped).

use reeve_proto::buddy::{Frame, MAX_FRAME, Request};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;

/// Most bytes queued for a controller that does not read (a full journal replay fits).
pub const MAX_PENDING: usize = crate::journal::CAP_BYTES as usize * 2 + MAX_FRAME;

/// One parsed line from the controller.
pub enum Incoming {
    /// A well-formed request.
    Request(Request),
    /// A line that is not a request: (id if one could be read, error).
    Bad(u64, String),
}

/// The attached controller.
pub struct Conn {
    stream: UnixStream,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    wpos: usize,
    /// Hello received: events are pushed.
    pub hello: bool,
}

impl Conn {
    /// Wraps an accepted stream (made non-blocking).
    pub fn new(stream: UnixStream) -> io::Result<Self> {
        stream.set_nonblocking(true)?;
        Ok(Conn {
            stream,
            rbuf: Vec::new(),
            wbuf: Vec::new(),
            wpos: 0,
            hello: false,
        })
    }

    /// The socket, for poll.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }

    /// True while output is queued.
    pub fn wants_write(&self) -> bool {
        self.wpos < self.wbuf.len()
    }

    /// True when the peer hung up.
    pub fn is_dead(&self) -> bool {
        crate::sys::peer_hung_up(self.stream.as_fd())
    }

    /// Reads what is available into `out`. `Ok(true)`: still open; `Ok(false)`: EOF (the
    /// requests read before it are still in `out`); `Err`: protocol error, close now.
    pub fn read(&mut self, scratch: &mut [u8], out: &mut Vec<Incoming>) -> Result<bool, String> {
        let mut open = true;
        loop {
            match self.stream.read(scratch) {
                Ok(0) => {
                    open = false;
                    break;
                }
                Ok(n) => {
                    self.rbuf.extend_from_slice(&scratch[..n]);
                    self.split(out)?;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(format!("read: {e}")),
            }
        }
        Ok(open)
    }

    fn split(&mut self, out: &mut Vec<Incoming>) -> Result<(), String> {
        let mut start = 0;
        while let Some(n) = self.rbuf[start..].iter().position(|&b| b == b'\n') {
            if n + 1 > MAX_FRAME {
                return Err("frame too large".into());
            }
            let line = &self.rbuf[start..start + n];
            start += n + 1;
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            out.push(parse(line));
        }
        self.rbuf.drain(..start);
        if self.rbuf.len() >= MAX_FRAME {
            return Err("frame too large".into());
        }
        if self.rbuf.is_empty() && self.rbuf.capacity() > 64 << 10 {
            self.rbuf = Vec::new();
        }
        Ok(())
    }

    /// Queues a frame and writes what the socket takes. `Err`: the controller must be
    /// dropped (it does not read, or the socket failed).
    pub fn send(&mut self, frame: &Frame) -> Result<(), String> {
        serde_json::to_writer(&mut self.wbuf, frame).map_err(|e| format!("serialize: {e}"))?;
        self.wbuf.push(b'\n');
        self.flush()?;
        if self.wbuf.len() - self.wpos > MAX_PENDING {
            return Err("controller does not read; output over the bound".into());
        }
        Ok(())
    }

    /// Writes queued output until the socket would block.
    pub fn flush(&mut self) -> Result<(), String> {
        while self.wpos < self.wbuf.len() {
            match self.stream.write(&self.wbuf[self.wpos..]) {
                Ok(0) => return Err("write: connection closed".into()),
                Ok(n) => self.wpos += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(format!("write: {e}")),
            }
        }
        if self.wpos == self.wbuf.len() {
            self.wbuf.clear();
            self.wpos = 0;
            if self.wbuf.capacity() > 64 << 10 {
                self.wbuf = Vec::new();
            }
        } else if self.wpos > 1 << 20 {
            self.wbuf.drain(..self.wpos);
            self.wpos = 0;
        }
        Ok(())
    }

    /// Best effort: waits up to `ms` for queued output to go out (before exiting).
    pub fn drain_for(&mut self, ms: u64) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(ms);
        while self.wants_write() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() || self.flush().is_err() {
                return;
            }
            let mut p = [libc::pollfd {
                fd: std::os::fd::AsRawFd::as_raw_fd(&self.stream),
                events: libc::POLLOUT,
                revents: 0,
            }];
            let _ = crate::sys::poll(&mut p, left.as_millis().min(i32::MAX as u128) as i32);
        }
    }
}

/// Parses one line; on failure tries to recover the id for the error reply.
fn parse(line: &[u8]) -> Incoming {
    match serde_json::from_slice::<Request>(line) {
        Ok(r) => Incoming::Request(r),
        Err(e) => {
            let id = serde_json::from_slice::<serde_json::Value>(line)
                .ok()
                .and_then(|v| v.get("id").and_then(|i| i.as_u64()))
                .unwrap_or(0);
            Incoming::Bad(id, format!("bad request: {e}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reeve_proto::buddy::Op;

    #[test]
    fn splits_lines_and_reports_bad_ones() {
        let (a, mut b) = UnixStream::pair().expect("pair");
        let mut c = Conn::new(a).expect("conn");
        b.write_all(b"{\"id\":1,\"op\":\"status\"}\n\n{\"id\":2,\"op\":\"nope\"}\n{\"id\":3,")
            .expect("write");
        let mut out = Vec::new();
        let mut scratch = [0u8; 64];
        assert_eq!(c.read(&mut scratch, &mut out), Ok(true));
        assert_eq!(out.len(), 2);
        assert!(matches!(
            &out[0],
            Incoming::Request(Request {
                id: 1,
                op: Op::Status
            })
        ));
        assert!(matches!(&out[1], Incoming::Bad(2, _)));
        out.clear();
        b.write_all(b"\"op\":\"stop\"}\n").expect("write");
        drop(b);
        assert_eq!(c.read(&mut scratch, &mut out), Ok(false));
        assert!(matches!(
            &out[0],
            Incoming::Request(Request {
                id: 3,
                op: Op::Stop
            })
        ));
    }

    #[test]
    fn oversized_frame_is_an_error() {
        let (a, mut b) = UnixStream::pair().expect("pair");
        let mut c = Conn::new(a).expect("conn");
        let big = vec![b'x'; MAX_FRAME + 10];
        std::thread::spawn(move || {
            let _ = b.write_all(&big);
        });
        let mut scratch = vec![0u8; 64 << 10];
        let mut out = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match c.read(&mut scratch, &mut out) {
                Err(e) => {
                    assert!(e.contains("too large"));
                    break;
                }
                Ok(false) => panic!("EOF before error"),
                Ok(true) => {
                    assert!(std::time::Instant::now() < deadline, "no error");
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
            }
        }
    }
}
