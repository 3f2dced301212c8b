//! One agent per data directory: an exclusive `flock` on `<data>/agent.lock`, held for the
//! agent's lifetime. The file holds the owner's pid so a refusal can name it.

use anyhow::{Context, Result, bail};
use rustix::fs::{FlockOperation, flock};
use std::io::{Read, Seek, Write};
use std::path::Path;

/// The held lock; released when dropped (or when the process dies).
pub struct DataDirLock {
    _file: std::fs::File,
}

impl DataDirLock {
    /// Takes the lock or explains who holds it.
    pub fn acquire(data_dir: &Path) -> Result<Self> {
        let path = data_dir.join("agent.lock");
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        if flock(&file, FlockOperation::NonBlockingLockExclusive).is_err() {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            bail!(
                "another agent (pid {}) is already using the data directory {}",
                holder.split_whitespace().next().unwrap_or("?"),
                data_dir.display()
            );
        }
        file.set_len(0).context("cannot truncate the lock file")?;
        file.rewind().context("cannot rewind the lock file")?;
        writeln!(file, "{}", std::process::id()).context("cannot write the lock file")?;
        Ok(Self { _file: file })
    }
}
