//! The agent's side of the buddy protocol: spawning a buddy, the handshake, sending
//! requests, and a reader task that forwards every frame to the service's actor.
//! Also reads a dead buddy's journal file directly, so nothing it recorded is lost.

use anyhow::{Context, Result, bail};
use reeve_proto::buddy::{
    BuddySpec, BuddyStatus, Frame, JournalEntry, MAX_FRAME, Op, PROTOCOL_VERSION, Reply, Request,
    files,
};
use std::io::Write;
use std::path::Path;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::mpsc;

/// What the reader task forwards to the actor, boxed ([`MsgTx`]).
#[derive(Debug)]
pub enum BuddyMsg {
    /// A frame from the buddy.
    Frame(Frame),
    /// The connection ended (EOF or error), with the reason if any.
    Closed {
        /// Connection generation, so a stale close is told from the current one.
        generation: u64,
        /// Why, if known.
        error: Option<String>,
    },
}

/// The channel to a service's actor. Its messages are boxed: a tokio channel allocates its
/// slots in blocks of 32 up front, and there is one channel per service.
pub type MsgTx = mpsc::Sender<Box<BuddyMsg>>;

/// A live connection to one buddy.
pub struct BuddyConn {
    writer: OwnedWriteHalf,
    next_id: u64,
    /// Connection generation (see [`BuddyMsg::Closed`]).
    pub generation: u64,
}

impl BuddyConn {
    /// Connects to the buddy of `run_dir`, says hello, and starts forwarding frames to `tx`.
    /// Returns the connection and the buddy's status from its welcome.
    pub async fn connect(
        run_dir: &Path,
        after_seq: u64,
        generation: u64,
        tx: MsgTx,
    ) -> Result<(Self, BuddyStatus)> {
        let sock = run_dir.join(files::SOCKET);
        let stream = UnixStream::connect(&sock)
            .await
            .with_context(|| format!("cannot connect to buddy socket {}", sock.display()))?;
        let (read, mut writer) = stream.into_split();
        let hello = Request {
            id: 0,
            op: Op::Hello {
                protocol: PROTOCOL_VERSION,
                controller: format!("reeve-agent {}", std::process::id()),
                after_seq,
            },
        };
        write_frame(&mut writer, &hello).await?;
        // Frames are small; a small buffer keeps 100 idle connections cheap.
        let mut reader = BufReader::with_capacity(1024, read);
        let first =
            tokio::time::timeout(std::time::Duration::from_secs(5), read_frame(&mut reader))
                .await
                .context("buddy did not answer hello within 5s")??
                .context("buddy closed the connection during hello")?;
        let status = match first {
            Frame::Reply {
                id: 0,
                reply: Reply::Welcome { status, .. },
            } => *status,
            Frame::Reply {
                reply: Reply::Error { message },
                ..
            } => bail!("buddy refused hello: {message}"),
            other => bail!("unexpected first frame from buddy: {other:?}"),
        };
        tokio::spawn(async move {
            let error = loop {
                match read_frame(&mut reader).await {
                    Ok(Some(f)) => {
                        if tx.send(Box::new(BuddyMsg::Frame(f))).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => break None,
                    Err(e) => break Some(format!("{e:#}")),
                }
            };
            let _ = tx
                .send(Box::new(BuddyMsg::Closed { generation, error }))
                .await;
        });
        Ok((
            Self {
                writer,
                next_id: 1,
                generation,
            },
            status,
        ))
    }

    /// Sends a request; the reply arrives as a frame with the returned id.
    pub async fn send(&mut self, op: Op) -> Result<u64> {
        let id = self.next_id;
        self.next_id += 1;
        write_frame(&mut self.writer, &Request { id, op }).await?;
        Ok(id)
    }
}

async fn write_frame(w: &mut OwnedWriteHalf, req: &Request) -> Result<()> {
    let mut line = serde_json::to_vec(req).context("cannot encode a buddy request")?;
    line.push(b'\n');
    w.write_all(&line)
        .await
        .context("cannot write to the buddy socket")
}

async fn read_frame<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R) -> Result<Option<Frame>> {
    let mut buf = Vec::new();
    let n = r
        .take(MAX_FRAME as u64)
        .read_until(b'\n', &mut buf)
        .await
        .context("cannot read from the buddy socket")?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() != Some(&b'\n') {
        bail!("buddy frame larger than {MAX_FRAME} bytes or truncated");
    }
    let frame = serde_json::from_slice(&buf).context("invalid frame from buddy")?;
    Ok(Some(frame))
}

/// Starts a buddy for `run_dir` with `spec`, returning once its socket accepts
/// connections. `start` says whether it starts the service at once.
///
/// The buddy detaches without forking (`--detach`: its own session, readiness reported on
/// its stdout), so starting a service costs one process creation, not two. It gets its
/// spec on stdin (`--spec-stdin`), so no spec file is created per start. It is the agent's
/// child only until the agent exits; tokio reaps it if it ends first.
pub async fn spawn_buddy(
    buddy_path: &Path,
    run_dir: &Path,
    spec: &BuddySpec,
    start: bool,
) -> Result<()> {
    create_private_dir(run_dir)?;
    let spec_json = serde_json::to_vec(spec).context("cannot encode the buddy spec")?;
    // The spec goes into a socket pair before the spawn, written at once (not through the
    // reactor, which would hold every buddy back until all of them are spawned): a spec
    // of a few KB fits its buffer; the rest of a larger one follows from a blocking task.
    let (ours, theirs) =
        std::os::unix::net::UnixStream::pair().context("cannot create the buddy's spec pipe")?;
    ours.set_nonblocking(true)
        .context("cannot set up the buddy's spec pipe")?;
    let mut sent = 0;
    while sent < spec_json.len() {
        match (&ours).write(&spec_json[sent..]) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).context("cannot pass the spec to the buddy"),
        }
    }
    let mut cmd = tokio::process::Command::new(buddy_path);
    cmd.arg("--dir")
        .arg(run_dir)
        .arg("--detach")
        .arg(if start { "--start" } else { "--no-start" })
        .arg("--spec-stdin")
        .stdin(std::os::fd::OwnedFd::from(theirs))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot run the buddy {}", buddy_path.display()))?;
    drop(cmd);
    if sent < spec_json.len() {
        // A failed write shows as a failed start (the buddy cannot parse its spec).
        tokio::task::spawn_blocking(move || {
            if ours.set_nonblocking(false).is_ok() {
                let _ = (&ours).write_all(&spec_json[sent..]);
            }
        });
    } else {
        // Closing our end is the buddy's EOF.
        drop(ours);
    }
    let mut answer = Vec::new();
    if let Some(mut out) = child.stdout.take() {
        // Bounded: the buddy writes one byte or a short error, then closes.
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            (&mut out).take(64 * 1024).read_to_end(&mut answer),
        )
        .await;
    }
    if answer.first() == Some(&0) {
        return Ok(());
    }
    // Not ready: collect why (stderr for argument errors, stdout for setup errors).
    let status = tokio::time::timeout(std::time::Duration::from_secs(5), child.wait()).await;
    let mut err = Vec::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = (&mut e).take(64 * 1024).read_to_end(&mut err).await;
    }
    let why = [
        String::from_utf8_lossy(&answer),
        String::from_utf8_lossy(&err),
    ]
    .iter()
    .map(|s| s.trim().to_owned())
    .filter(|s| !s.is_empty())
    .collect::<Vec<_>>()
    .join("; ");
    bail!(
        "buddy for {} failed to start ({}): {}",
        run_dir.display(),
        match status {
            Ok(Ok(s)) => s.to_string(),
            _ => "still running".into(),
        },
        if why.is_empty() { "no message" } else { &why }
    )
}

/// Creates a directory (and parents) readable only by the agent's user.
pub fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))
}

/// Reads the journal entries with `seq > after` straight from a buddy's journal file
/// (used when the buddy is gone). A torn last line is ignored.
pub fn read_journal_file(run_dir: &Path, after: u64) -> Vec<JournalEntry> {
    let Ok(text) = std::fs::read_to_string(run_dir.join(files::JOURNAL)) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| serde_json::from_str::<JournalEntry>(l).ok())
        .filter(|e| e.seq > after)
        .collect()
}
