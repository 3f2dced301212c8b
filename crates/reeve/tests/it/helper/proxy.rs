//! A TCP proxy between agents and the hub that the tests can make misbehave: cut every
//! live connection at once (a link going down), delay bytes, or silently stop passing
//! anything on the live connections while keeping them open (a NAT that forgot them).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A running proxy.
pub struct Proxy {
    /// Where agents connect.
    pub port: u16,
    live: Arc<Mutex<Vec<TcpStream>>>,
    down: Arc<AtomicBool>,
    delay_ms: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    /// One flag per connection: set, its bytes are swallowed.
    silenced: Arc<Mutex<Vec<Arc<AtomicBool>>>>,
    accepted: Arc<AtomicU64>,
}

impl Proxy {
    /// Forwards a free loopback port to `upstream` (host:port).
    pub fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let live: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let down = Arc::new(AtomicBool::new(false));
        let delay_ms = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let silenced: Arc<Mutex<Vec<Arc<AtomicBool>>>> = Arc::default();
        let accepted = Arc::new(AtomicU64::new(0));
        let (l2, d2, dl2, s2) = (live.clone(), down.clone(), delay_ms.clone(), stop.clone());
        let (si2, a2) = (silenced.clone(), accepted.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s2.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(client) = conn else { continue };
                if d2.load(Ordering::Relaxed) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&upstream) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                a2.fetch_add(1, Ordering::Relaxed);
                let silent = Arc::new(AtomicBool::new(false));
                if let Ok(mut v) = si2.lock() {
                    v.push(silent.clone());
                }
                if let Ok(mut l) = l2.lock() {
                    for s in [&client, &server] {
                        if let Ok(c) = s.try_clone() {
                            l.push(c);
                        }
                    }
                }
                for (from, to) in [(&client, &server), (&server, &client)] {
                    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
                        continue;
                    };
                    let delay = dl2.clone();
                    let silent = silent.clone();
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16384];
                        loop {
                            let n = match from.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            if silent.load(Ordering::Relaxed) {
                                continue; // swallowed: the connection stays open
                            }
                            let d = delay.load(Ordering::Relaxed);
                            if d > 0 {
                                std::thread::sleep(Duration::from_millis(d));
                            }
                            if to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(Shutdown::Write);
                    });
                }
            }
        });
        Self {
            port,
            live,
            down,
            delay_ms,
            stop,
            silenced,
            accepted,
        }
    }

    /// From now on nothing passes on the connections that are open, either way, and none
    /// is closed: a NAT or firewall that dropped them without a word. New connections
    /// pass.
    pub fn silence_live(&self) {
        if let Ok(v) = self.silenced.lock() {
            for f in v.iter() {
                f.store(true, Ordering::Relaxed);
            }
        }
    }

    /// How many connections it has accepted and forwarded so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Cuts every live connection (both ends see the link drop).
    pub fn cut(&self) {
        if let Ok(mut l) = self.live.lock() {
            for s in l.drain(..) {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
    }

    /// While down, new connections are refused and live ones cut.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::Relaxed);
        if down {
            self.cut();
        }
    }

    /// Delays every chunk of bytes by `ms` (each direction).
    pub fn set_delay(&self, ms: u64) {
        self.delay_ms.store(ms, Ordering::Relaxed);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.cut();
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}
