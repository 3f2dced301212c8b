//! Reading the log files the buddies write (`<log dir>/current.log` and its rotations).

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// The current log file of a service's log directory.
pub fn current(dir: &Path) -> std::path::PathBuf {
    dir.join("current.log")
}

/// The last `n` lines of a service's output, oldest first, across one rotation.
pub fn tail(dir: &Path, n: usize) -> Vec<String> {
    let mut lines = tail_file(&current(dir), n);
    if lines.len() < n {
        let mut older = tail_file(&dir.join("current.log.1"), n - lines.len());
        older.append(&mut lines);
        lines = older;
    }
    lines
}

fn tail_file(path: &Path, n: usize) -> Vec<String> {
    if n == 0 {
        return Vec::new();
    }
    let Ok(mut f) = std::fs::File::open(path) else {
        return Vec::new();
    };
    let Ok(len) = f.seek(SeekFrom::End(0)) else {
        return Vec::new();
    };
    // Read backwards in chunks until we have n newlines (bounded to 16 MiB).
    let mut start = len;
    let mut buf: Vec<u8> = Vec::new();
    while start > 0 && buf.iter().filter(|&&b| b == b'\n').count() <= n && buf.len() < 16 << 20 {
        let step = (64 * 1024u64).min(start);
        start -= step;
        let mut chunk = vec![0u8; step as usize];
        if f.seek(SeekFrom::Start(start)).is_err() || f.read_exact(&mut chunk).is_err() {
            return Vec::new();
        }
        chunk.extend_from_slice(&buf);
        buf = chunk;
    }
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    let skip = all.len().saturating_sub(n);
    all[skip..].iter().map(|s| (*s).to_owned()).collect()
}

/// Sends every line appended to the current log from now on, following rotations, until
/// the receiver goes away. Polls four times a second while someone follows.
pub async fn follow(
    dir: &Path,
    tx: tokio::sync::mpsc::Sender<Result<axum::body::Bytes, std::io::Error>>,
) {
    use std::os::unix::fs::MetadataExt;
    let path = current(dir);
    let mut pos = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let mut ino = std::fs::metadata(&path).map(|m| m.ino()).unwrap_or(0);
    let mut partial = Vec::new();
    loop {
        if tx.is_closed() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.ino() != ino || meta.len() < pos {
            ino = meta.ino();
            pos = 0;
        }
        if meta.len() == pos {
            continue;
        }
        let Ok(mut f) = std::fs::File::open(&path) else {
            continue;
        };
        if f.seek(SeekFrom::Start(pos)).is_err() {
            continue;
        }
        let mut buf = Vec::new();
        if f.read_to_end(&mut buf).is_err() {
            continue;
        }
        pos += buf.len() as u64;
        partial.extend_from_slice(&buf);
        if let Some(end) = partial.iter().rposition(|&b| b == b'\n') {
            let chunk: Vec<u8> = partial.drain(..=end).collect();
            if tx.send(Ok(axum::body::Bytes::from(chunk))).await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_spans_rotation() -> std::io::Result<()> {
        let d = tempfile::tempdir()?;
        std::fs::write(d.path().join("current.log.1"), "a\nb\nc\n")?;
        std::fs::write(d.path().join("current.log"), "d\ne\n")?;
        assert_eq!(tail(d.path(), 3), vec!["c", "d", "e"]);
        assert_eq!(tail(d.path(), 1), vec!["e"]);
        assert_eq!(tail(d.path(), 10).len(), 5);
        Ok(())
    }

    #[test]
    fn tail_of_a_large_file() -> std::io::Result<()> {
        let d = tempfile::tempdir()?;
        let text: String = (0..100_000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(d.path().join("current.log"), text)?;
        assert_eq!(tail(d.path(), 2), vec!["line 99998", "line 99999"]);
        Ok(())
    }
}
