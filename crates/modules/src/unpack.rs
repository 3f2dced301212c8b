//! Safe unpack of a verified package into a fresh module directory.
//!
//! Guarantees, whatever the archive holds:
//! - **Nothing outside the target changes, and a bad archive changes nothing.** The archive
//!   is unpacked into a temporary directory beside the target (through a `cap_std` directory
//!   handle, so no write can leave it), the manifest is checked there, and only on success is
//!   it renamed to the target. On any error the temporary directory is removed and the
//!   target stays absent. The target must not exist.
//! - **Only plain relative paths**: an entry path that is absolute or has `..` is refused; a
//!   leading `./` is allowed. No entry may go through a symbolic link of the archive, and no
//!   path may appear twice.
//! - **Links stay inside**: a symbolic link's target must be relative, with all its `..` at
//!   the start and no more of them than the link's depth (`../lib/x` from `bin/y` is fine,
//!   `a/../..` is not); a hard link must name a regular file unpacked before it, by a plain
//!   path.
//! - **Only files, directories and links**: device, FIFO, sparse and unknown entries are
//!   refused, and so are directories and links that claim content.
//! - **Limits** ([`Limits`]): at most `max_entries` entries (extension headers count) and at
//!   most `max_bytes` of content, counted as the stream is read, so a decompression bomb is
//!   stopped at the limit. GNU long names and PAX headers are read by this module with a cap
//!   of [`MAX_EXTENSION_BYTES`] (the `tar` crate would buffer them whole).
//! - **Modes**: files get `0644`, or `0755` when the archive gave any execute bit; no
//!   set-uid, owners or times are restored.
//!
//! After unpacking, the manifest is loaded and must name the package the signature named
//! (name, version, platform), so a signed 1.0 served as 2.0 fails.

use std::cell::Cell;
use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;

use cap_std::ambient_authority;
use cap_std::fs::{Dir, OpenOptions, OpenOptionsExt};
use flate2::read::GzDecoder;
use tar::EntryType;

use crate::identity::PackageIdentity;
use crate::manifest::{Manifest, ManifestErrors, check_clean};

/// The largest GNU long-name/long-link or PAX extension entry accepted.
pub const MAX_EXTENSION_BYTES: u64 = 64 * 1024;

/// Limits on what one package may unpack to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most entries (files, directories, links, extension headers).
    pub max_entries: u64,
    /// Most bytes of content in total (file contents plus extension headers).
    pub max_bytes: u64,
}

impl Default for Limits {
    /// 100 000 entries, 4 GiB.
    fn default() -> Self {
        Self {
            max_entries: 100_000,
            max_bytes: 4 << 30,
        }
    }
}

/// Why a package was not unpacked. Nothing was left on disk.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// The target directory already exists.
    #[error("{} already exists", .path.display())]
    TargetExists {
        /// The target.
        path: PathBuf,
    },
    /// Reading the archive or writing the files failed.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The archive, the target, or the entry's path.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The archive is not a valid gzip-compressed tar stream.
    #[error("corrupt archive: {source}")]
    Corrupt {
        /// The cause.
        source: io::Error,
    },
    /// More than [`Limits::max_entries`] entries.
    #[error("more than {limit} entries")]
    TooManyEntries {
        /// The limit.
        limit: u64,
    },
    /// More than [`Limits::max_bytes`] of content.
    #[error("more than {limit} bytes of content (a decompression bomb?)")]
    TooLarge {
        /// The limit.
        limit: u64,
    },
    /// An extension header (long name, PAX) larger than [`MAX_EXTENSION_BYTES`] or invalid.
    #[error("bad extension header: {reason}")]
    BadExtension {
        /// What is wrong.
        reason: String,
    },
    /// An entry path that is absolute, has `..`, goes through a link, or repeats one.
    #[error("unsafe path {path:?}: {reason}")]
    UnsafePath {
        /// The path as written in the archive.
        path: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A symbolic or hard link pointing outside the module or nowhere valid.
    #[error("link {path:?} → {target:?}: {reason}")]
    BadLink {
        /// The link.
        path: String,
        /// Its target as written.
        target: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A device, FIFO, sparse or unknown entry, or a directory or link with content.
    #[error("{path:?}: {kind} entries are not allowed")]
    Unsupported {
        /// The entry's path.
        path: String,
        /// What it is.
        kind: String,
    },
    /// The unpacked manifest is invalid.
    #[error(transparent)]
    Manifest(#[from] ManifestErrors),
    /// The manifest does not name the package the signature named.
    #[error("the signature names {expected} but the manifest inside says {found}")]
    IdentityMismatch {
        /// From the signature.
        expected: Box<PackageIdentity>,
        /// From the manifest.
        found: Box<PackageIdentity>,
    },
}

/// Unpacks the package at `archive` into the new directory `target` (its parent must exist),
/// checks its manifest, and checks that the manifest names `expected` (the identity from the
/// package's verified signature). Returns the manifest. See the module docs for what is
/// refused; on error nothing is left on disk.
pub fn unpack(
    archive: &Path,
    target: &Path,
    limits: &Limits,
    expected: &PackageIdentity,
) -> Result<Manifest, UnpackError> {
    let io_at = |path: &Path| {
        let path = path.to_path_buf();
        move |source| UnpackError::Io { path, source }
    };
    if fs::symlink_metadata(target).is_ok() {
        return Err(UnpackError::TargetExists {
            path: target.to_path_buf(),
        });
    }
    let parent = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let stem = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{stem}.unpack-"))
        .tempdir_in(parent)
        .map_err(io_at(parent))?;
    let dir = Dir::open_ambient_dir(tmp.path(), ambient_authority()).map_err(io_at(tmp.path()))?;
    let file = fs::File::open(archive).map_err(io_at(archive))?;
    extract(io::BufReader::new(file), &dir, limits)?;
    let manifest = Manifest::load(tmp.path())?;
    let found = manifest.identity();
    if &found != expected {
        return Err(UnpackError::IdentityMismatch {
            expected: Box::new(expected.clone()),
            found: Box::new(found),
        });
    }
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755))
            .map_err(io_at(tmp.path()))?;
    }
    fs::rename(tmp.path(), target).map_err(io_at(target))?;
    // Renamed: nothing left to clean up.
    let _ = tmp.keep();
    Ok(manifest)
}

/// Whether a symbolic link at `link` (a clean relative path in the module) pointing at
/// `target` stays inside the module: `target` is relative, has all its `..` first, and no
/// more of them than `link`'s parent has components.
pub fn link_stays_inside(link: &Path, target: &Path) -> bool {
    let depth = link.parent().map_or(0, |p| p.components().count());
    let mut ups = 0;
    let mut seen_normal = false;
    for c in target.components() {
        match c {
            Component::ParentDir if !seen_normal => ups += 1,
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return false,
            Component::CurDir => {}
            Component::Normal(_) => seen_normal = true,
        }
    }
    !target.as_os_str().is_empty() && ups <= depth
}

/// A reader that fails once more than `left` bytes were read through it, and says so in
/// `tripped`.
struct Capped<R> {
    inner: R,
    left: u64,
    tripped: Rc<Cell<bool>>,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        match self.left.checked_sub(n as u64) {
            Some(left) => {
                self.left = left;
                Ok(n)
            }
            None => {
                self.tripped.set(true);
                Err(io::Error::other("archive stream over its limit"))
            }
        }
    }
}

/// What has been unpacked so far.
#[derive(Default)]
struct Seen {
    entries: u64,
    bytes: u64,
    paths: HashSet<PathBuf>,
    files: HashSet<PathBuf>,
    symlinks: HashSet<PathBuf>,
}

fn extract<R: Read>(reader: R, dir: &Dir, limits: &Limits) -> Result<(), UnpackError> {
    let tripped = Rc::new(Cell::new(false));
    // Content is limited exactly below; this cap on the whole decompressed stream (content
    // plus at most 1 KiB of header and padding per entry) is a second line of defence.
    let stream_cap = limits
        .max_bytes
        .saturating_add(limits.max_entries.saturating_add(4).saturating_mul(1024));
    let capped = Capped {
        inner: GzDecoder::new(reader),
        left: stream_cap,
        tripped: Rc::clone(&tripped),
    };
    let mut archive = tar::Archive::new(capped);
    let corrupt = |source: io::Error| {
        if tripped.get() {
            UnpackError::TooLarge {
                limit: limits.max_bytes,
            }
        } else {
            UnpackError::Corrupt { source }
        }
    };
    let mut seen = Seen::default();
    let mut long_name: Option<Vec<u8>> = None;
    let mut long_link: Option<Vec<u8>> = None;
    for entry in archive.entries().map_err(corrupt)?.raw(true) {
        let mut entry = entry.map_err(corrupt)?;
        seen.entries += 1;
        if seen.entries > limits.max_entries {
            return Err(UnpackError::TooManyEntries {
                limit: limits.max_entries,
            });
        }
        let kind = entry.header().entry_type();
        let size = entry.header().entry_size().map_err(corrupt)?;
        if kind.is_gnu_longname()
            || kind.is_gnu_longlink()
            || kind.is_pax_local_extensions()
            || kind.is_pax_global_extensions()
        {
            if size > MAX_EXTENSION_BYTES {
                return Err(UnpackError::BadExtension {
                    reason: format!("{size} bytes, more than {MAX_EXTENSION_BYTES}"),
                });
            }
            add_bytes(&mut seen, size, limits)?;
            let mut data = Vec::new();
            entry.read_to_end(&mut data).map_err(corrupt)?;
            if kind.is_gnu_longname() {
                long_name = Some(trim_nul(data));
            } else if kind.is_gnu_longlink() {
                long_link = Some(trim_nul(data));
            } else if kind.is_pax_local_extensions() {
                read_pax(&data, &mut long_name, &mut long_link)?;
            }
            continue;
        }
        let path = long_name
            .take()
            .unwrap_or_else(|| entry.header().path_bytes().into_owned());
        let link = long_link
            .take()
            .or_else(|| entry.header().link_name_bytes().map(|l| l.into_owned()));
        let item = Item {
            shown: String::from_utf8_lossy(&path).into_owned(),
            path,
            link,
            kind,
            size,
            executable: entry.header().mode().is_ok_and(|m| m & 0o111 != 0),
        };
        unpack_entry(&mut entry, &item, dir, &mut seen, limits).map_err(|e| match e {
            UnpackError::Io { .. } if tripped.get() => UnpackError::TooLarge {
                limit: limits.max_bytes,
            },
            e => e,
        })?;
    }
    Ok(())
}

fn trim_nul(mut data: Vec<u8>) -> Vec<u8> {
    while data.last() == Some(&0) {
        data.pop();
    }
    data
}

fn read_pax(
    data: &[u8],
    name: &mut Option<Vec<u8>>,
    link: &mut Option<Vec<u8>>,
) -> Result<(), UnpackError> {
    for ext in tar::PaxExtensions::new(data) {
        let ext = ext.map_err(|e| UnpackError::BadExtension {
            reason: format!("PAX record: {e}"),
        })?;
        match ext.key() {
            Ok("path") => *name = Some(ext.value_bytes().to_vec()),
            Ok("linkpath") => *link = Some(ext.value_bytes().to_vec()),
            Ok("size") | Ok("GNU.sparse.size") | Ok("GNU.sparse.map") => {
                return Err(UnpackError::BadExtension {
                    reason: "PAX size and sparse records are not supported".to_owned(),
                });
            }
            _ => {}
        }
    }
    Ok(())
}

fn add_bytes(seen: &mut Seen, n: u64, limits: &Limits) -> Result<(), UnpackError> {
    seen.bytes = seen.bytes.saturating_add(n);
    if seen.bytes > limits.max_bytes {
        Err(UnpackError::TooLarge {
            limit: limits.max_bytes,
        })
    } else {
        Ok(())
    }
}

/// One entry's header facts, names resolved.
struct Item {
    path: Vec<u8>,
    shown: String,
    link: Option<Vec<u8>>,
    kind: EntryType,
    size: u64,
    executable: bool,
}

fn unpack_entry(
    data: &mut impl Read,
    item: &Item,
    dir: &Dir,
    seen: &mut Seen,
    limits: &Limits,
) -> Result<(), UnpackError> {
    let unsafe_path = |reason| UnpackError::UnsafePath {
        path: item.shown.clone(),
        reason,
    };
    let raw = Path::new(OsStr::from_bytes(&item.path));
    if raw.is_absolute() {
        return Err(unsafe_path("absolute path"));
    }
    if raw.components().any(|c| c == Component::ParentDir) {
        return Err(unsafe_path("'..' in the path"));
    }
    let Some(rel) = check_clean(raw) else {
        // "./" or "": the module root itself.
        return if item.kind == EntryType::Directory {
            Ok(())
        } else {
            Err(unsafe_path("empty path"))
        };
    };
    if rel.ancestors().skip(1).any(|a| seen.symlinks.contains(a)) {
        return Err(unsafe_path("goes through a symbolic link"));
    }
    if !seen.paths.insert(rel.clone()) {
        return Err(unsafe_path("appears twice"));
    }
    let io_at = |source| UnpackError::Io {
        path: rel.clone(),
        source,
    };
    let unsupported = |kind: &str| UnpackError::Unsupported {
        path: item.shown.clone(),
        kind: kind.to_owned(),
    };
    let is_file = matches!(item.kind, EntryType::Regular | EntryType::Continuous);
    if !is_file && item.size != 0 {
        return Err(unsupported("non-file entries with content"));
    }
    if let Some(parent) = rel.parent().filter(|p| !p.as_os_str().is_empty()) {
        dir.create_dir_all(parent).map_err(io_at)?;
    }
    match item.kind {
        EntryType::Regular | EntryType::Continuous => {
            add_bytes(seen, item.size, limits)?;
            let mode = if item.executable { 0o755 } else { 0o644 };
            let mut out = dir
                .open_with(
                    &rel,
                    OpenOptions::new().write(true).create_new(true).mode(mode),
                )
                .map_err(io_at)?;
            let copied = io::copy(data, &mut out).map_err(io_at)?;
            if copied != item.size {
                return Err(UnpackError::Corrupt {
                    source: io::Error::new(io::ErrorKind::UnexpectedEof, "truncated entry"),
                });
            }
            seen.files.insert(rel);
        }
        EntryType::Directory => dir.create_dir_all(&rel).map_err(io_at)?,
        EntryType::Symlink => {
            let target = item.link.clone().unwrap_or_default();
            let target_path = Path::new(OsStr::from_bytes(&target));
            if !link_stays_inside(&rel, target_path) {
                return Err(UnpackError::BadLink {
                    path: item.shown.clone(),
                    target: String::from_utf8_lossy(&target).into_owned(),
                    reason: "points outside the module",
                });
            }
            dir.symlink(target_path, &rel).map_err(io_at)?;
            seen.symlinks.insert(rel);
        }
        EntryType::Link => {
            let target = item.link.clone().unwrap_or_default();
            let bad = |reason| UnpackError::BadLink {
                path: item.shown.clone(),
                target: String::from_utf8_lossy(&target).into_owned(),
                reason,
            };
            let target_path = Path::new(OsStr::from_bytes(&target));
            let clean = if target_path.components().any(|c| {
                matches!(
                    c,
                    Component::ParentDir | Component::RootDir | Component::Prefix(_)
                )
            }) {
                None
            } else {
                check_clean(target_path)
            };
            let Some(clean) = clean else {
                return Err(bad(
                    "a hard link must name a file of the archive by a plain path",
                ));
            };
            if !seen.files.contains(&clean) {
                return Err(bad(
                    "a hard link must name a regular file unpacked before it",
                ));
            }
            dir.hard_link(&clean, dir, &rel).map_err(io_at)?;
            seen.files.insert(rel);
        }
        EntryType::Char => return Err(unsupported("character device")),
        EntryType::Block => return Err(unsupported("block device")),
        EntryType::Fifo => return Err(unsupported("FIFO")),
        EntryType::GNUSparse => return Err(unsupported("sparse file")),
        other => return Err(unsupported(&format!("{other:?}"))),
    }
    Ok(())
}
