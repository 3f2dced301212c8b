//! The durable event journal: append-only JSON lines of [`JournalEntry`] in `RUN_DIR/journal`.
//!
//! - Entries are appended with one `write(2)` each on an `O_APPEND` descriptor; the event
//!   loop calls [`Journal::sync`] (fdatasync) once per loop iteration, after a restart's
//!   spawn, so durability never delays a restart.
//! - On open, the file is scanned for the highest `seq`; a torn last line (no newline, from a
//!   crash) is truncated away. Numbering continues after that maximum.
//! - **Compaction keeps a watermark.** When the controller has acknowledged up to `seq` and
//!   the file has grown past [`COMPACT_AT`], the file is rewritten (temp file + fsync + rename + directory fsync) keeping only the entries
//!   with a higher `seq`; if none remain, the last entry is kept anyway as the seq watermark.
//!   The highest seq therefore survives a crash at any point (the rename is atomic and both
//!   versions contain it), so numbering stays monotonic without a second file.
//! - **Cap.** When the file grows beyond [`CAP_BYTES`] (no controller for a long time), the
//!   oldest half is dropped the same way; the caller notes it in `buddy.log`.

use reeve_proto::UnixMillis;
use reeve_proto::buddy::{BuddyEvent, JournalEntry};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// Above this size the oldest half of the journal is dropped.
pub const CAP_BYTES: u64 = 4 << 20;

/// Acknowledged entries are compacted away only once the file is this large, so an ack
/// costs nothing on the common path (replays and readers filter by seq anyway).
pub const COMPACT_AT: u64 = 64 << 10;

/// The journal file and its numbering.
pub struct Journal {
    path: PathBuf,
    file: File,
    last_seq: u64,
    size: u64,
    dirty: bool,
    acked: u64,
    compact_at: u64,
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Parses the complete lines of `data`: (entries, byte offset of each entry's line).
fn parse(data: &[u8]) -> Vec<(usize, JournalEntry)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while let Some(n) = data[pos..].iter().position(|&b| b == b'\n') {
        if let Ok(e) = serde_json::from_slice::<JournalEntry>(&data[pos..pos + n]) {
            out.push((pos, e));
        }
        pos += n + 1;
    }
    out
}

impl Journal {
    /// Opens (creating) the journal at `path`, recovering the last seq and truncating a torn
    /// last line. Returns a note when something had to be repaired.
    pub fn open(path: &Path) -> io::Result<(Journal, Option<String>)> {
        let mut data = Vec::new();
        match File::open(path) {
            Ok(mut f) => {
                f.read_to_end(&mut data)?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let mut note = None;
        let good = data.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
        if good < data.len() {
            let f = OpenOptions::new().write(true).open(path)?;
            f.set_len(good as u64)?;
            f.sync_all()?;
            note = Some(format!(
                "journal: truncated a torn last line ({} bytes)",
                data.len() - good
            ));
            data.truncate(good);
        }
        let entries = parse(&data);
        let last_seq = entries.iter().map(|(_, e)| e.seq).max().unwrap_or(0);
        let file = open_append(path)?;
        Ok((
            Journal {
                path: path.to_path_buf(),
                file,
                last_seq,
                size: good as u64,
                dirty: false,
                acked: 0,
                compact_at: COMPACT_AT,
            },
            note,
        ))
    }

    /// Highest seq written.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Appends an event with the next seq. The entry is returned even when the write failed
    /// (the seq is used up either way), together with the error.
    pub fn append(
        &mut self,
        kind: BuddyEvent,
        ts_ms: UnixMillis,
    ) -> (JournalEntry, Option<String>) {
        self.last_seq += 1;
        let entry = JournalEntry {
            seq: self.last_seq,
            ts_ms,
            kind,
        };
        let mut err = None;
        match serde_json::to_vec(&entry) {
            Ok(mut line) => {
                line.push(b'\n');
                match self.file.write_all(&line) {
                    Ok(()) => {
                        self.size += line.len() as u64;
                        self.dirty = true;
                    }
                    Err(e) => err = Some(format!("journal: write seq {}: {e}", entry.seq)),
                }
            }
            Err(e) => err = Some(format!("journal: serialize seq {}: {e}", entry.seq)),
        }
        if err.is_none() && self.size > CAP_BYTES {
            err = Some(match self.drop_oldest_half() {
                Ok(n) => format!("journal: over {CAP_BYTES} bytes, dropped {n} oldest entries"),
                Err(e) => format!("journal: cap: {e}"),
            });
        }
        (entry, err)
    }

    /// fdatasync if anything was written since the last call.
    pub fn sync(&mut self) -> io::Result<()> {
        if self.dirty {
            self.dirty = false;
            self.file.sync_data()?;
        }
        Ok(())
    }

    /// Every stored entry with `seq > after`.
    pub fn entries_after(&self, after: u64) -> io::Result<Vec<JournalEntry>> {
        let data = std::fs::read(&self.path)?;
        Ok(parse(&data)
            .into_iter()
            .map(|(_, e)| e)
            .filter(|e| e.seq > after)
            .collect())
    }

    /// Compacts on every ack from now on, whatever the size (tests).
    #[cfg(test)]
    fn compact_always(&mut self) {
        self.compact_at = 0;
    }

    /// The controller stored everything up to `seq`: compact the file once it is large.
    pub fn ack(&mut self, seq: u64) -> io::Result<()> {
        let seq = seq.min(self.last_seq);
        if seq <= self.acked {
            return Ok(());
        }
        self.acked = seq;
        if self.size < self.compact_at {
            return Ok(());
        }
        let data = std::fs::read(&self.path)?;
        let entries = parse(&data);
        let keep_from = entries
            .iter()
            .find(|(_, e)| e.seq > seq)
            .map(|(off, _)| *off)
            .or_else(|| entries.last().map(|(off, _)| *off))
            .unwrap_or(data.len());
        if keep_from == 0 {
            return Ok(());
        }
        self.rewrite(&data[keep_from..])
    }

    /// Drops the older half (by bytes) of the file; returns how many entries were dropped.
    fn drop_oldest_half(&mut self) -> io::Result<usize> {
        let data = std::fs::read(&self.path)?;
        let entries = parse(&data);
        let half = data.len() / 2;
        let (dropped, keep_from) = entries
            .iter()
            .enumerate()
            .find(|(_, (off, _))| *off >= half)
            .map(|(i, (off, _))| (i, *off))
            .unwrap_or((0, 0));
        self.rewrite(&data[keep_from..])?;
        Ok(dropped)
    }

    /// Atomically replaces the file by `keep` and reopens the append descriptor.
    fn rewrite(&mut self, keep: &[u8]) -> io::Result<()> {
        let tmp = self.path.with_extension("tmp");
        {
            let mut f = File::create(&tmp)?;
            f.write_all(keep)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        let dir = match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        self.file = open_append(&self.path)?;
        self.size = keep.len() as u64;
        self.dirty = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn started(j: &mut Journal) -> u64 {
        let (e, err) = j.append(BuddyEvent::Stopped, 1);
        assert!(err.is_none(), "{err:?}");
        e.seq
    }

    #[test]
    fn seq_survives_reopen_torn_line_and_compaction() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("journal");
        let (mut j, note) = Journal::open(&path).expect("open");
        assert!(note.is_none());
        assert_eq!(started(&mut j), 1);
        assert_eq!(started(&mut j), 2);
        assert_eq!(started(&mut j), 3);
        j.sync().expect("sync");
        drop(j);
        // A torn line from a crash.
        let mut f = open_append(&path).expect("append");
        f.write_all(b"{\"seq\":4,\"ts_").expect("write");
        drop(f);
        let (mut j, note) = Journal::open(&path).expect("reopen");
        j.compact_always();
        assert!(note.is_some());
        assert_eq!(j.last_seq(), 3);
        assert_eq!(j.entries_after(1).expect("read").len(), 2);
        // Partial ack keeps the rest.
        j.ack(2).expect("ack");
        let left: Vec<_> = j
            .entries_after(0)
            .expect("read")
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(left, vec![3]);
        // Full ack keeps the watermark line; numbering continues.
        j.ack(3).expect("ack");
        assert_eq!(j.entries_after(0).expect("read").len(), 1);
        assert!(j.entries_after(3).expect("read").is_empty());
        assert_eq!(started(&mut j), 4);
        drop(j);
        let (j, _) = Journal::open(&path).expect("reopen");
        assert_eq!(j.last_seq(), 4);
    }

    #[test]
    fn cap_drops_the_oldest_half_and_keeps_the_max_seq() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("journal");
        let (mut j, _) = Journal::open(&path).expect("open");
        let mut capped = false;
        let mut n = 0;
        while !capped {
            let (e, err) = j.append(
                BuddyEvent::Failed {
                    reason: "x".repeat(1000),
                },
                1,
            );
            n = e.seq;
            capped = err.is_some();
        }
        let all = j.entries_after(0).expect("read");
        assert!(all.len() < n as usize);
        assert_eq!(all.last().map(|e| e.seq), Some(n));
        assert!(std::fs::metadata(&path).expect("meta").len() <= CAP_BYTES / 2 + 2048);
    }
}
