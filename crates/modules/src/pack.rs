//! Making packages: [`pack`] turns a module directory into a reproducible
//! `<name>-<version>[-<os>-<arch>].tar.gz`, and [`read_package_identity`] reads back what an
//! archive says it is (to sign it).
//!
//! **Reproducible**: the same directory gives the same bytes, on any machine. Entries are
//! sorted by name (a directory before what it holds), every mtime is 0, uid/gid 0, no user or
//! group names, modes normalised (files `0644`, or `0755` when any execute bit is set;
//! directories `0755`), and the gzip header has no mtime, no file name and OS "unknown".
//! Symbolic links are kept when they point inside the module; other special files are
//! refused.

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::read::GzDecoder;
use tar::{EntryType, Header};

use crate::identity::PackageIdentity;
use crate::manifest::{MANIFEST_JSON, MANIFEST_TOML, Manifest, ManifestErrors, ManifestFormat};
use crate::unpack::link_stays_inside;

/// Why a package could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    /// The module's manifest is invalid.
    #[error(transparent)]
    Manifest(#[from] ManifestErrors),
    /// A file could not be read or written.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The module holds something that is not a file, directory or symbolic link.
    #[error("{}: only files, directories and symbolic links can be packed", .path.display())]
    SpecialFile {
        /// The offending path.
        path: PathBuf,
    },
    /// A symbolic link points outside the module (or is absolute).
    #[error("{}: the link target {} leaves the module", .path.display(), .target.display())]
    LinkOutside {
        /// The link.
        path: PathBuf,
        /// Where it points.
        target: PathBuf,
    },
    /// The module holds a signing secret key: it must never be shipped.
    #[error("{}: this is a minisign secret key; move it out of the module directory", .path.display())]
    SecretKey {
        /// The offending file.
        path: PathBuf,
    },
    /// The archive has no manifest at its root, or one whose identity cannot be read.
    #[error("{}: {reason}", .path.display())]
    NoIdentity {
        /// The archive.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> PackError + '_ {
    move |source| PackError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Packs the module in `dir` (its manifest is loaded and checked first) into
/// `out_dir/<name>-<version>[-<os>-<arch>].tar.gz`, replacing any file of that name, and
/// returns the package's path. The archive is written beside and renamed into place.
pub fn pack(dir: &Path, out_dir: &Path) -> Result<PathBuf, PackError> {
    let manifest = Manifest::load(dir)?;
    let file_name = manifest.identity().file_name();
    let out = out_dir.join(&file_name);
    let part = out_dir.join(format!(".{file_name}.part"));
    let out_dir_real = fs::canonicalize(out_dir).map_err(io_err(out_dir))?;
    let skip = [
        out_dir_real.join(&file_name),
        out_dir_real.join(format!(".{file_name}.part")),
    ];

    let mut entries = Vec::new();
    collect(dir, Path::new(""), &skip, &mut entries)?;

    let file = fs::File::create(&part).map_err(io_err(&part))?;
    let gz = flate2::GzBuilder::new()
        .operating_system(255)
        .write(file, Compression::default());
    let mut builder = tar::Builder::new(gz);
    for entry in &entries {
        append(&mut builder, dir, entry)?;
    }
    let gz = builder.into_inner().map_err(io_err(&part))?;
    let file = gz.finish().map_err(io_err(&part))?;
    file.sync_all().map_err(io_err(&part))?;
    fs::rename(&part, &out).map_err(io_err(&out))?;
    Ok(out)
}

/// One thing to pack: its path in the archive and what it is.
struct Item {
    rel: PathBuf,
    kind: ItemKind,
}

enum ItemKind {
    Dir,
    File { executable: bool },
    Symlink { target: PathBuf },
}

/// True for a minisign (or rsign) secret key file: its first line says so.
fn is_secret_key(path: &Path) -> bool {
    use std::io::Read;
    let Ok(mut f) = fs::File::open(path) else {
        return false;
    };
    let mut head = [0u8; 96];
    let n = f.read(&mut head).unwrap_or(0);
    let first = String::from_utf8_lossy(&head[..n]);
    let first = first.lines().next().unwrap_or("");
    first.starts_with("untrusted comment:") && first.contains("secret key")
}

/// Collects `dir/rel`'s contents, sorted by name, depth first.
fn collect(
    root: &Path,
    rel: &Path,
    skip: &[PathBuf],
    out: &mut Vec<Item>,
) -> Result<(), PackError> {
    let here = root.join(rel);
    let mut names: Vec<_> = fs::read_dir(&here)
        .map_err(io_err(&here))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .map_err(io_err(&here))?;
    names.sort();
    for name in names {
        let rel = rel.join(&name);
        let path = root.join(&rel);
        let meta = fs::symlink_metadata(&path).map_err(io_err(&path))?;
        let ft = meta.file_type();
        if ft.is_file() {
            let real = fs::canonicalize(&path).map_err(io_err(&path))?;
            if skip.contains(&real) {
                continue;
            }
            if is_secret_key(&path) {
                return Err(PackError::SecretKey { path });
            }
            let executable = meta.permissions().mode() & 0o111 != 0;
            out.push(Item {
                rel,
                kind: ItemKind::File { executable },
            });
        } else if ft.is_dir() {
            out.push(Item {
                rel: rel.clone(),
                kind: ItemKind::Dir,
            });
            collect(root, &rel, skip, out)?;
        } else if ft.is_symlink() {
            let target = fs::read_link(&path).map_err(io_err(&path))?;
            if !link_stays_inside(&rel, &target) {
                return Err(PackError::LinkOutside { path, target });
            }
            out.push(Item {
                rel,
                kind: ItemKind::Symlink { target },
            });
        } else {
            return Err(PackError::SpecialFile { path });
        }
    }
    Ok(())
}

fn append<W: io::Write>(
    builder: &mut tar::Builder<W>,
    root: &Path,
    item: &Item,
) -> Result<(), PackError> {
    let path = root.join(&item.rel);
    let mut header = Header::new_gnu();
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    match &item.kind {
        ItemKind::Dir => {
            header.set_entry_type(EntryType::Directory);
            header.set_mode(0o755);
            header.set_size(0);
            builder
                .append_data(&mut header, &item.rel, io::empty())
                .map_err(io_err(&path))
        }
        ItemKind::File { executable } => {
            let file = fs::File::open(&path).map_err(io_err(&path))?;
            let len = file.metadata().map_err(io_err(&path))?.len();
            header.set_entry_type(EntryType::Regular);
            header.set_mode(if *executable { 0o755 } else { 0o644 });
            header.set_size(len);
            builder
                .append_data(&mut header, &item.rel, file.take(len))
                .map_err(io_err(&path))
        }
        ItemKind::Symlink { target } => {
            header.set_entry_type(EntryType::Symlink);
            header.set_mode(0o777);
            header.set_size(0);
            builder
                .append_link(&mut header, &item.rel, target)
                .map_err(io_err(&path))
        }
    }
}

/// Reads the name, version and platform from the manifest at the root of the archive at
/// `path`, streaming (nothing is unpacked; nothing else in the manifest is checked).
pub fn read_package_identity(path: &Path) -> Result<PackageIdentity, PackError> {
    let file = fs::File::open(path).map_err(io_err(path))?;
    let mut archive = tar::Archive::new(GzDecoder::new(io::BufReader::new(file)));
    let no_identity = |reason: String| PackError::NoIdentity {
        path: path.to_path_buf(),
        reason,
    };
    for entry in archive.entries().map_err(io_err(path))? {
        let mut entry = entry.map_err(io_err(path))?;
        let entry_path = entry.path().map_err(io_err(path))?.into_owned();
        let format = match crate::manifest::check_clean(&entry_path) {
            Some(p) if p == Path::new(MANIFEST_TOML) => ManifestFormat::Toml,
            Some(p) if p == Path::new(MANIFEST_JSON) => ManifestFormat::Json,
            _ => continue,
        };
        if entry.header().entry_type() != EntryType::Regular || entry.size() > 1 << 20 {
            return Err(no_identity(format!(
                "{} is not a regular file of at most 1 MiB",
                entry_path.display()
            )));
        }
        let mut text = String::new();
        entry.read_to_string(&mut text).map_err(io_err(path))?;
        return crate::manifest::read_identity(&text, format)
            .map_err(|r| no_identity(format!("{}: {r}", entry_path.display())));
    }
    Err(no_identity(format!(
        "no {MANIFEST_TOML} or {MANIFEST_JSON} at the archive's root"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module(dir: &Path) {
        fs::create_dir_all(dir.join("bin")).unwrap();
        fs::create_dir_all(dir.join("empty")).unwrap();
        fs::write(
            dir.join(MANIFEST_TOML),
            "name = \"m\"\nversion = \"1.0.0\"\nplatform = \"linux-x86_64\"\n",
        )
        .unwrap();
        fs::write(dir.join("bin/run"), "#!/bin/sh\necho hi\n").unwrap();
        fs::set_permissions(dir.join("bin/run"), fs::Permissions::from_mode(0o700)).unwrap();
        fs::write(dir.join("data.txt"), "x".repeat(5000)).unwrap();
        fs::set_permissions(dir.join("data.txt"), fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::symlink("bin/run", dir.join("run")).unwrap();
        let long = "d".repeat(120);
        fs::create_dir_all(dir.join(&long)).unwrap();
        fs::write(dir.join(&long).join("f".repeat(120)), "long").unwrap();
    }

    #[test]
    fn packs_reproducibly() {
        let src = tempfile::tempdir().unwrap();
        module(src.path());
        let out1 = tempfile::tempdir().unwrap();
        let out2 = tempfile::tempdir().unwrap();
        let a = pack(src.path(), out1.path()).unwrap();
        // Touch everything: new mtimes must not change the bytes.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        fs::write(src.path().join("data.txt"), "x".repeat(5000)).unwrap();
        let b = pack(src.path(), out2.path()).unwrap();
        assert_eq!(a.file_name().unwrap(), "m-1.0.0-linux-x86_64.tar.gz");
        assert_eq!(fs::read(&a).unwrap(), fs::read(&b).unwrap());
        let id = read_package_identity(&a).unwrap();
        assert_eq!(id.file_name(), "m-1.0.0-linux-x86_64.tar.gz");
    }

    #[test]
    fn entries_are_normalised_and_sorted() {
        let src = tempfile::tempdir().unwrap();
        module(src.path());
        // Packing into the module directory itself skips its own output.
        let a = pack(src.path(), src.path()).unwrap();
        let b = pack(src.path(), src.path()).unwrap();
        assert_eq!(a, b);
        let mut archive = tar::Archive::new(GzDecoder::new(fs::File::open(&a).unwrap()));
        let mut seen = Vec::new();
        for e in archive.entries().unwrap() {
            let e = e.unwrap();
            let h = e.header();
            assert_eq!(h.mtime().unwrap(), 0);
            assert_eq!((h.uid().unwrap(), h.gid().unwrap()), (0, 0));
            assert_eq!(h.username().unwrap(), Some(""));
            let p = e.path().unwrap().to_string_lossy().into_owned();
            let mode = h.mode().unwrap();
            match p.as_str() {
                "bin/run" => assert_eq!(mode, 0o755),
                "data.txt" => assert_eq!(mode, 0o644),
                "run" => assert_eq!(e.link_name().unwrap().unwrap().to_str(), Some("bin/run")),
                _ => {}
            }
            seen.push(p);
        }
        assert!(!seen.iter().any(|p| p.ends_with(".tar.gz")), "{seen:?}");
        let mut sorted = seen.clone();
        sorted.sort();
        assert_eq!(seen, sorted);
        assert!(seen.contains(&"empty".to_owned()));
        assert!(seen.iter().any(|p| p.len() > 240));
    }

    #[test]
    fn refuses_links_out_and_bad_manifests() {
        let src = tempfile::tempdir().unwrap();
        module(src.path());
        std::os::unix::fs::symlink("../../etc/passwd", src.path().join("bin/evil")).unwrap();
        let out = tempfile::tempdir().unwrap();
        assert!(matches!(
            pack(src.path(), out.path()),
            Err(PackError::LinkOutside { .. })
        ));
        fs::remove_file(src.path().join("bin/evil")).unwrap();
        fs::write(src.path().join(MANIFEST_TOML), "name = \"m\"\n").unwrap();
        assert!(matches!(
            pack(src.path(), out.path()),
            Err(PackError::Manifest(_))
        ));
        assert_eq!(fs::read_dir(out.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_secret_key_in_the_module_is_refused() {
        let module = tempfile::tempdir().expect("tempdir");
        let out = tempfile::tempdir().expect("tempdir");
        fs::write(
            module.path().join("module.toml"),
            "name = \"m\"\nversion = \"1.0.0\"\n",
        )
        .expect("manifest");
        let keys = crate::sign::generate_keypair().expect("keygen");
        fs::write(
            module.path().join("release.key"),
            keys.secret.to_file_text().expect("key text"),
        )
        .expect("key");
        match pack(module.path(), out.path()) {
            Err(PackError::SecretKey { path }) => assert!(path.ends_with("release.key")),
            other => panic!("expected SecretKey, got {other:?}"),
        }
        assert_eq!(
            fs::read_dir(out.path()).expect("out").count(),
            0,
            "nothing written"
        );
    }
}
