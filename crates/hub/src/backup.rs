//! `reeve hub backup` and `reeve hub restore`, and the lock a running hub holds on its data
//! directory.
//!
//! A backup is one uncompressed tar file (mode 0600: it holds the hub's secret key) with:
//! - `hub.db`: the database, copied with SQLite's online backup API, so it is consistent
//!   even while the hub runs (nodes, operators, tokens, messages, the outbox and inbox);
//! - `hub.key`, `tls-cert.der`, `tls-key.der`: the hub's identity (nodes pin its key);
//! - `reeve-hub-backup.json`: the manifest, with each file's size and SHA-256.
//!
//! A restore checks everything first (the entries, their digests, the database's integrity,
//! the key) in a staging directory beside the target, and only then puts it in place: a
//! corrupt backup changes nothing. It refuses a data directory whose hub is running, and one
//! that holds a hub's data unless forced (the old directory is then kept beside it).

use anyhow::{Context, Result, bail};
use rusqlite::{Connection, OpenFlags};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The lock file a running hub holds (`flock`), with its pid.
pub const LOCK_FILE: &str = "hub.lock";
/// The manifest's name in a backup.
pub const MANIFEST: &str = "reeve-hub-backup.json";
/// The database's name in a data directory and in a backup.
pub const DB_FILE: &str = "hub.db";
/// The identity files a backup holds besides the database.
pub const IDENTITY_FILES: [&str; 3] = ["hub.key", "tls-cert.der", "tls-key.der"];
/// Identity files a backup holds when the data directory has them: the endorsement of a
/// hub key rotation (its nodes follow it until the overlap ends).
pub const OPTIONAL_FILES: [&str; 1] = [crate::rekey::ENDORSEMENT_FILE];
const FORMAT: u32 = 1;

/// The data directory's lock, held for as long as a hub serves from it.
pub struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    /// Takes the lock (and writes this process's pid in it), or says which process holds it.
    pub fn acquire(dir: &Path) -> Result<Self> {
        Self::take(dir, true)
    }

    fn take(dir: &Path, write_pid: bool) -> Result<Self> {
        let path = dir.join(LOCK_FILE);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                bail!(
                    "a hub (pid {}) is running on the data directory {}",
                    holder.split_whitespace().next().unwrap_or("?"),
                    dir.display()
                );
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", path.display()));
            }
        }
        if write_pid {
            file.set_len(0).context("cannot truncate the lock file")?;
            writeln!(file, "{}", std::process::id()).context("cannot write the lock file")?;
        }
        Ok(Self { _file: file })
    }
}

/// One file of a backup.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct FileEntry {
    /// Its size in bytes.
    pub size: u64,
    /// Its SHA-256 (hex).
    pub sha256: String,
}

/// The manifest of a backup.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Manifest {
    /// The backup format (1).
    pub format: u32,
    /// The reeve version that made it.
    pub version: String,
    /// When, ms since the epoch.
    pub created_ms: u64,
    /// The hub's key fingerprint.
    pub hub_fingerprint: String,
    /// Enrolled nodes at the time.
    pub nodes: u64,
    /// Messages at the time.
    pub messages: u64,
    /// Each file by name.
    pub files: BTreeMap<String, FileEntry>,
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Removes a staging directory when dropped (unless kept).
struct Staging(Option<PathBuf>);

impl Staging {
    fn create(path: PathBuf) -> Result<Self> {
        if path.exists() {
            std::fs::remove_dir_all(&path)
                .with_context(|| format!("cannot remove the stale {}", path.display()))?;
        }
        std::fs::create_dir_all(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700))?;
        Ok(Self(Some(path)))
    }
    fn path(&self) -> &Path {
        self.0.as_deref().unwrap_or(Path::new("."))
    }
    fn keep(mut self) -> PathBuf {
        self.0.take().unwrap_or_default()
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_dir_all(p);
        }
    }
}

/// A sibling path of `p`: `.<name><suffix>` in the same directory.
fn sibling(p: &Path, suffix: &str) -> Result<PathBuf> {
    let name = p
        .file_name()
        .with_context(|| format!("{} has no file name", p.display()))?
        .to_string_lossy();
    let parent = p.parent().filter(|d| !d.as_os_str().is_empty());
    Ok(parent
        .unwrap_or(Path::new("."))
        .join(format!(".{name}{suffix}")))
}

/// Copies the database at `src` into the new file `dst` with SQLite's online backup: one
/// consistent snapshot, even while the hub writes.
fn copy_database(src: &Path, dst: &Path) -> Result<()> {
    let from = Connection::open_with_flags(
        src,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("cannot open {}", src.display()))?;
    from.busy_timeout(std::time::Duration::from_secs(10))?;
    let mut to =
        Connection::open(dst).with_context(|| format!("cannot create {}", dst.display()))?;
    {
        use rusqlite::backup::{Backup, StepResult};
        let b = Backup::new(&from, &mut to).context("cannot start the database backup")?;
        let mut waits = 0;
        loop {
            // All pages in one step: the copy is one read transaction on the source.
            match b.step(-1).context("database backup")? {
                StepResult::Done => break,
                StepResult::More => {}
                StepResult::Busy | StepResult::Locked => {
                    waits += 1;
                    if waits > 400 {
                        bail!("the database stayed locked for 20 s; try again");
                    }
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                _ => {}
            }
        }
    }
    // A self-contained file: no WAL beside it.
    to.pragma_update(None, "journal_mode", "DELETE")
        .context("cannot finish the database copy")?;
    check_database(&to)?;
    to.close()
        .map_err(|(_, e)| e)
        .context("cannot close the database copy")?;
    Ok(())
}

/// Integrity and shape of a hub database; returns (nodes, messages).
fn check_database(c: &Connection) -> Result<(u64, u64)> {
    let verdict: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .context("cannot check the database")?;
    if verdict != "ok" {
        bail!("the database is damaged: {verdict}");
    }
    let count = |table: &str| -> Result<u64> {
        c.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| {
            r.get::<_, i64>(0)
        })
        .map(|n| n as u64)
        .with_context(|| format!("the database has no table {table}: not a hub database"))
    };
    count("outbox")?;
    count("hub_operators")?;
    Ok((count("hub_nodes")?, count("hub_messages")?))
}

/// What a backup or a restore did.
#[derive(Serialize, Debug, Clone)]
pub struct Summary {
    /// The backup file.
    pub file: PathBuf,
    /// The data directory.
    pub data_dir: PathBuf,
    /// Enrolled nodes in the backup.
    pub nodes: u64,
    /// Messages in the backup.
    pub messages: u64,
    /// The hub's key fingerprint.
    pub hub_fingerprint: String,
    /// Where the replaced data directory was kept (restore with `force`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replaced: Option<PathBuf>,
    /// After a restore: the hub's new stream instance ([`renew`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// After a restore: waiting messages sealed again onto the new streams.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resealed: Option<u64>,
}

pub mod renew;

/// Backs up the hub data directory `dir` into the new file `out` (running hub or not).
pub fn backup(dir: &Path, out: &Path) -> Result<Summary> {
    let db = dir.join(DB_FILE);
    if !db.is_file() || !dir.join(IDENTITY_FILES[0]).is_file() {
        bail!(
            "{} is not a hub data directory (no {DB_FILE} and {})",
            dir.display(),
            IDENTITY_FILES[0]
        );
    }
    if out.exists() {
        bail!(
            "{} exists already: a backup never overwrites; choose another name",
            out.display()
        );
    }
    let staging = Staging::create(sibling(out, &format!(".tmp-{}", std::process::id()))?)?;
    let copy = staging.path().join(DB_FILE);
    copy_database(&db, &copy)?;
    let (nodes, messages) = {
        let c = Connection::open_with_flags(&copy, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        check_database(&c)?
    };
    let mut contents: Vec<(String, Vec<u8>)> = vec![(
        DB_FILE.into(),
        std::fs::read(&copy).with_context(|| format!("cannot read {}", copy.display()))?,
    )];
    for name in IDENTITY_FILES {
        let p = dir.join(name);
        contents.push((
            name.into(),
            std::fs::read(&p).with_context(|| format!("cannot read {}", p.display()))?,
        ));
    }
    for name in OPTIONAL_FILES {
        let p = dir.join(name);
        if p.is_file() {
            contents.push((
                name.into(),
                std::fs::read(&p).with_context(|| format!("cannot read {}", p.display()))?,
            ));
        }
    }
    let key = reeve_delivery::keys::KeyPair::from_secret_base64(
        String::from_utf8_lossy(&contents[1].1).trim(),
    )
    .context("hub.key is not a reeve key")?;
    let manifest = Manifest {
        format: FORMAT,
        version: env!("CARGO_PKG_VERSION").into(),
        created_ms: crate::now_ms(),
        hub_fingerprint: key.public().fingerprint(),
        nodes,
        messages,
        files: contents
            .iter()
            .map(|(n, b)| {
                (
                    n.clone(),
                    FileEntry {
                        size: b.len() as u64,
                        sha256: sha256_hex(b),
                    },
                )
            })
            .collect(),
    };
    let tmp = staging.path().join("backup.tar");
    {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        let mut t = tar::Builder::new(f);
        let mut add = |name: &str, bytes: &[u8]| -> Result<()> {
            let mut h = tar::Header::new_ustar();
            h.set_size(bytes.len() as u64);
            h.set_mode(0o600);
            h.set_mtime(manifest.created_ms / 1000);
            h.set_entry_type(tar::EntryType::Regular);
            t.append_data(&mut h, name, bytes)
                .with_context(|| format!("cannot write {name} into the backup"))
        };
        add(MANIFEST, &serde_json::to_vec_pretty(&manifest)?)?;
        for (name, bytes) in &contents {
            add(name, bytes)?;
        }
        let f = t.into_inner().context("cannot finish the backup file")?;
        f.sync_all().context("cannot sync the backup file")?;
    }
    std::fs::rename(&tmp, out).with_context(|| format!("cannot create {}", out.display()))?;
    Ok(Summary {
        file: out.to_path_buf(),
        data_dir: dir.to_path_buf(),
        nodes,
        messages,
        hub_fingerprint: manifest.hub_fingerprint,
        replaced: None,
        instance: None,
        resealed: None,
    })
}

/// Reads and checks the backup `from` into `into` (an empty directory); returns its manifest.
fn unpack_checked(from: &Path, into: &Path) -> Result<Manifest> {
    let f = File::open(from).with_context(|| format!("cannot open {}", from.display()))?;
    let mut archive = tar::Archive::new(f);
    let mut seen: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let allowed: Vec<&str> = [MANIFEST, DB_FILE]
        .into_iter()
        .chain(IDENTITY_FILES)
        .chain(OPTIONAL_FILES)
        .collect();
    for entry in archive.entries().context("not a tar file")? {
        let mut e = entry.context("the tar file is damaged")?;
        let name = e
            .path()
            .context("an entry has an unreadable name")?
            .to_string_lossy()
            .into_owned();
        if !allowed.contains(&name.as_str()) || e.header().entry_type() != tar::EntryType::Regular {
            bail!("unexpected entry {name:?}: not a reeve hub backup");
        }
        if e.size() > 64 << 30 {
            bail!("entry {name} is implausibly large");
        }
        let mut bytes = Vec::with_capacity(e.size() as usize);
        e.read_to_end(&mut bytes)
            .with_context(|| format!("cannot read {name}: the tar file is damaged"))?;
        if seen.insert(name.clone(), bytes).is_some() {
            bail!("entry {name} appears twice");
        }
    }
    let manifest: Manifest = serde_json::from_slice(
        seen.get(MANIFEST)
            .with_context(|| format!("no {MANIFEST}: not a reeve hub backup"))?,
    )
    .with_context(|| format!("{MANIFEST} is unreadable"))?;
    if manifest.format != FORMAT {
        bail!(
            "backup format {} is not one this reeve reads ({FORMAT})",
            manifest.format
        );
    }
    let optional = OPTIONAL_FILES.into_iter().filter(|n| seen.contains_key(*n));
    for name in [DB_FILE].into_iter().chain(IDENTITY_FILES).chain(optional) {
        let bytes = seen
            .get(name)
            .with_context(|| format!("{name} is missing from the backup"))?;
        let want = manifest
            .files
            .get(name)
            .with_context(|| format!("the manifest does not list {name}"))?;
        if want.size != bytes.len() as u64 || want.sha256 != sha256_hex(bytes) {
            bail!("{name} does not match its digest in the manifest: the backup is damaged");
        }
        let p = into.join(name);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&p)
            .with_context(|| format!("cannot create {}", p.display()))?;
        f.write_all(bytes)
            .and_then(|_| f.sync_all())
            .with_context(|| format!("cannot write {}", p.display()))?;
    }
    let key = reeve_delivery::keys::KeyPair::from_secret_base64(
        String::from_utf8_lossy(&seen[IDENTITY_FILES[0]]).trim(),
    )
    .context("hub.key in the backup is not a reeve key")?;
    if key.public().fingerprint() != manifest.hub_fingerprint {
        bail!("hub.key is not the key the manifest names");
    }
    let c = Connection::open_with_flags(into.join(DB_FILE), OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    check_database(&c)?;
    Ok(manifest)
}

/// Restores the backup `from` into the hub data directory `dir`. Refuses while a hub runs
/// there; refuses a directory holding a hub's data unless `force` (it is then moved aside,
/// not deleted). Nothing changes unless the whole backup checks out.
pub fn restore(dir: &Path, from: &Path, force: bool) -> Result<Summary> {
    if !from.is_file() {
        bail!("{} is not a file", from.display());
    }
    // Check the target first: refusals should not wait for a large unpack.
    let occupied = dir.is_dir()
        && std::fs::read_dir(dir)
            .with_context(|| format!("cannot read {}", dir.display()))?
            .next()
            .is_some();
    // A hub running there holds the lock file; without one, none runs.
    let lock = if dir.join(LOCK_FILE).exists() {
        Some(DataDirLock::take(dir, false).context("restore refused: stop the hub first")?)
    } else {
        None
    };
    if occupied && !force {
        let holds_hub = dir.join(DB_FILE).exists() || dir.join(IDENTITY_FILES[0]).exists();
        let what = if holds_hub {
            "holds a hub's data"
        } else {
            "is not empty"
        };
        bail!(
            "{} {what}; pass --force to replace it (it is kept beside, renamed)",
            dir.display()
        );
    }
    let staging = Staging::create(sibling(dir, &format!(".restore-{}", std::process::id()))?)?;
    let manifest = unpack_checked(from, staging.path()).with_context(|| {
        format!(
            "the backup {} is unusable; nothing was changed",
            from.display()
        )
    })?;
    let renewed = renew::renew_streams(staging.path(), from)?;
    let mut replaced = None;
    if dir.exists() {
        if occupied {
            let aside = dir.with_file_name(format!(
                "{}.replaced-{}",
                dir.file_name()
                    .map_or("hub".into(), |n| n.to_string_lossy()),
                crate::now_ms()
            ));
            std::fs::rename(dir, &aside).with_context(|| {
                format!("cannot move {} aside to {}", dir.display(), aside.display())
            })?;
            replaced = Some(aside);
        } else {
            std::fs::remove_dir(dir)
                .with_context(|| format!("cannot replace the empty {}", dir.display()))?;
        }
    }
    drop(lock);
    let staged = staging.keep();
    std::fs::rename(&staged, dir).with_context(|| {
        format!(
            "cannot move the restored files into {} (they are in {})",
            dir.display(),
            staged.display()
        )
    })?;
    Ok(Summary {
        file: from.to_path_buf(),
        data_dir: dir.to_path_buf(),
        nodes: manifest.nodes,
        messages: manifest.messages,
        hub_fingerprint: manifest.hub_fingerprint,
        replaced,
        instance: Some(renewed.instance),
        resealed: Some(renewed.resealed),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub_dir(root: &Path) -> PathBuf {
        let dir = root.join("hub");
        std::fs::create_dir_all(&dir).expect("dir");
        crate::identity::load_or_create(&dir).expect("identity");
        let mut s = reeve_delivery::store::DeliveryStore::open(&dir.join(DB_FILE)).expect("store");
        crate::db::migrate(s.conn()).expect("schema");
        s.instance().expect("instance");
        s.conn()
            .execute(
                "INSERT INTO hub_nodes (name, key, enrolled_ms) VALUES ('n1', 'k', 1)",
                [],
            )
            .expect("node");
        dir
    }

    #[test]
    fn a_backup_restores_and_a_damaged_one_changes_nothing() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = hub_dir(root.path());
        let out = root.path().join("b.tar");
        let s = backup(&dir, &out).expect("backup");
        assert_eq!((s.nodes, s.messages), (1, 0));
        assert!(backup(&dir, &out).is_err(), "never overwrites");
        let mode = std::fs::metadata(&out).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);

        // A running hub's directory is refused.
        let lock = DataDirLock::acquire(&dir).expect("lock");
        let e = restore(&dir, &out, true).expect_err("running");
        assert!(format!("{e:#}").contains("is running"), "{e:#}");
        drop(lock);
        // An occupied one needs force.
        let e = restore(&dir, &out, false).expect_err("occupied");
        assert!(format!("{e:#}").contains("--force"), "{e:#}");

        // A damaged backup: one byte flipped in the database.
        let mut bytes = std::fs::read(&out).expect("read");
        let at = bytes.len() / 2;
        bytes[at] ^= 0xff;
        let bad = root.path().join("bad.tar");
        std::fs::write(&bad, &bytes).expect("write");
        let target = root.path().join("new");
        let e = restore(&target, &bad, false).expect_err("damaged");
        assert!(format!("{e:#}").contains("nothing was changed"), "{e:#}");
        assert!(!target.exists());
        // Not a tar at all.
        std::fs::write(&bad, b"hello").expect("write");
        assert!(restore(&target, &bad, false).is_err());
        assert!(!target.exists());

        let r = restore(&target, &out, false).expect("restore");
        assert_eq!(r.nodes, 1);
        for f in [DB_FILE].into_iter().chain(IDENTITY_FILES) {
            assert!(!std::fs::read(target.join(f)).expect("restored").is_empty());
        }
        assert_eq!(
            std::fs::read(target.join("hub.key")).expect("key"),
            std::fs::read(dir.join("hub.key")).expect("key")
        );
        // Forced over an existing directory: the old one is kept aside.
        let r = restore(&dir, &out, true).expect("forced");
        assert!(
            r.replaced
                .as_ref()
                .is_some_and(|p| p.join(DB_FILE).exists())
        );
        assert!(dir.join(DB_FILE).exists());
    }
}
