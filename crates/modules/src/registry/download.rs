//! Downloading one package into the cache: resumable, hashed while it streams, verified
//! before it gets its final name.

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use reqwest::{StatusCode, Url, header};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::{FetchedPackage, Progress, Registry, RegistryError};
use crate::identity::PackageIdentity;
use crate::sign::{VerifiedSignature, verify_file};

/// Fetches the package `identity` names, whose signature text is `signature`.
pub(super) async fn fetch_package(
    reg: &Registry,
    identity: &PackageIdentity,
    signature: String,
    progress: &mut (dyn FnMut(&Progress) + Send),
) -> Result<FetchedPackage, RegistryError> {
    let file = identity.file_name();
    let cache = &reg.config.cache_dir;
    let cache_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| RegistryError::Cache { path, source }
    };
    tokio::fs::create_dir_all(cache)
        .await
        .map_err(cache_err(cache))?;
    let path = cache.join(&file);
    let part = cache.join(format!("{file}.part"));
    let signature_path = cache.join(format!("{file}.minisig"));

    if tokio::fs::try_exists(&path).await.unwrap_or(false) {
        match check(reg, identity, &path, &signature).await {
            Ok((verified, sha256, size)) => {
                tokio::fs::write(&signature_path, &signature)
                    .await
                    .map_err(cache_err(&signature_path))?;
                return Ok(FetchedPackage {
                    path,
                    signature_path,
                    signature: verified,
                    identity: identity.clone(),
                    sha256,
                    size,
                    from_cache: true,
                });
            }
            // A cached file that no longer checks out (or was never the signed one) is
            // downloaded again.
            Err(_) => tokio::fs::remove_file(&path)
                .await
                .map_err(cache_err(&path))?,
        }
    }

    let url = reg.file_url(&identity.module_ref(), &file)?;
    let (sha256, size) = download(reg, &url, &part, &file, progress).await?;
    let verified = match check_signature(reg, identity, &part, &signature).await {
        Ok(v) => v,
        Err(e) => {
            let _ = tokio::fs::remove_file(&part).await;
            return Err(e);
        }
    };
    tokio::fs::write(&signature_path, &signature)
        .await
        .map_err(cache_err(&signature_path))?;
    tokio::fs::rename(&part, &path)
        .await
        .map_err(cache_err(&path))?;
    Ok(FetchedPackage {
        path,
        signature_path,
        signature: verified,
        identity: identity.clone(),
        sha256,
        size,
        from_cache: false,
    })
}

/// Verifies a cached package and hashes it.
async fn check(
    reg: &Registry,
    identity: &PackageIdentity,
    path: &Path,
    signature: &str,
) -> Result<(VerifiedSignature, String, u64), RegistryError> {
    let verified = check_signature(reg, identity, path, signature).await?;
    let p = path.to_path_buf();
    let (sha256, size) = tokio::task::spawn_blocking(move || hash_file(&p))
        .await
        .map_err(|e| RegistryError::Cache {
            path: path.to_path_buf(),
            source: std::io::Error::other(e),
        })?
        .map_err(|source| RegistryError::Cache {
            path: path.to_path_buf(),
            source,
        })?;
    Ok((verified, hex(&sha256.finalize()), size))
}

/// Verifies `path` against the trusted keys, and that the signature names `identity`.
async fn check_signature(
    reg: &Registry,
    identity: &PackageIdentity,
    path: &Path,
    signature: &str,
) -> Result<VerifiedSignature, RegistryError> {
    let file = identity.file_name();
    let keys = reg.config.trusted_keys.clone();
    let p = path.to_path_buf();
    let sig = signature.to_owned();
    let verified = tokio::task::spawn_blocking(move || verify_file(&p, &sig, &keys))
        .await
        .map_err(|e| RegistryError::Cache {
            path: path.to_path_buf(),
            source: std::io::Error::other(e),
        })?
        .map_err(|source| RegistryError::Signature {
            file: file.clone(),
            source,
        })?;
    let signed = verified
        .identity()
        .map_err(|source| RegistryError::Signature {
            file: file.clone(),
            source,
        })?;
    if &signed != identity {
        return Err(RegistryError::WrongPackage {
            file,
            expected: Box::new(identity.clone()),
            signed: Box::new(signed),
        });
    }
    Ok(verified)
}

fn hash_file(path: &Path) -> std::io::Result<(Sha256, u64)> {
    let mut f = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok((hasher, size));
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Where a transfer stands.
struct Transfer {
    hasher: Sha256,
    have: u64,
}

/// Downloads `url` into `part` (resuming what is there), returning SHA-256 and size.
async fn download(
    reg: &Registry,
    url: &Url,
    part: &Path,
    file: &str,
    progress: &mut (dyn FnMut(&Progress) + Send),
) -> Result<(String, u64), RegistryError> {
    let cache_err = |source| RegistryError::Cache {
        path: part.to_path_buf(),
        source,
    };
    // Bytes left by an earlier call are hashed first, then continued.
    let (hasher, have) = if tokio::fs::try_exists(part).await.unwrap_or(false) {
        let p = part.to_path_buf();
        tokio::task::spawn_blocking(move || hash_file(&p))
            .await
            .map_err(|e| cache_err(std::io::Error::other(e)))?
            .map_err(cache_err)?
    } else {
        (Sha256::new(), 0)
    };
    let mut t = Transfer { hasher, have };
    let mut failures = 0u32;
    loop {
        let before = t.have;
        match attempt(reg, url, part, file, &mut t, progress).await {
            Ok(Some(())) => return Ok((hex(&t.hasher.finalize()), t.have)),
            Ok(None) => {}
            Err(Retry::Fatal(e)) => return Err(e),
            Err(Retry::Again(e)) => {
                if t.have == before {
                    failures += 1;
                    if failures >= reg.config.max_attempts {
                        return Err(e.unwrap_or_else(|| RegistryError::GaveUp {
                            url: url.to_string(),
                            attempts: failures,
                        }));
                    }
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(failures))).await;
                } else {
                    failures = 0;
                }
            }
        }
    }
}

/// How an attempt ended badly: try again (with the error to report if tries run out), or
/// stop.
enum Retry {
    Again(Option<RegistryError>),
    Fatal(RegistryError),
}

/// One request. `Ok(Some(()))`: complete; `Ok(None)`: start over at once (the server
/// ignored the range).
async fn attempt(
    reg: &Registry,
    url: &Url,
    part: &Path,
    file: &str,
    t: &mut Transfer,
    progress: &mut (dyn FnMut(&Progress) + Send),
) -> Result<Option<()>, Retry> {
    let fatal_cache = |source| {
        Retry::Fatal(RegistryError::Cache {
            path: part.to_path_buf(),
            source,
        })
    };
    let http = |source| {
        Retry::Again(Some(RegistryError::Http {
            url: url.to_string(),
            source,
        }))
    };
    let mut req = reg.client.get(url.clone());
    if t.have > 0 {
        req = req.header(header::RANGE, format!("bytes={}-", t.have));
    }
    let mut resp = req.send().await.map_err(http)?;
    let status = resp.status();
    let resuming = t.have > 0;
    let total = match status {
        StatusCode::PARTIAL_CONTENT if resuming => {
            match content_range_start(&resp) {
                Some((start, total)) if start == t.have => total,
                // Not the range asked for: start over.
                _ => {
                    restart(part, t).await.map_err(fatal_cache)?;
                    return Ok(None);
                }
            }
        }
        StatusCode::OK => {
            if resuming {
                // The server ignored the range: the body is the whole file.
                restart(part, t).await.map_err(fatal_cache)?;
            }
            resp.content_length()
        }
        StatusCode::RANGE_NOT_SATISFIABLE => {
            restart(part, t).await.map_err(fatal_cache)?;
            return Err(Retry::Again(None));
        }
        s if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS => {
            return Err(Retry::Again(Some(RegistryError::Status {
                url: url.to_string(),
                status: s.as_u16(),
            })));
        }
        s => {
            return Err(Retry::Fatal(RegistryError::Status {
                url: url.to_string(),
                status: s.as_u16(),
            }));
        }
    };
    let limit = reg.config.max_package_bytes;
    let too_large = || {
        Retry::Fatal(RegistryError::TooLarge {
            url: url.to_string(),
            limit,
        })
    };
    if total.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let mut out = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(part)
        .await
        .map_err(fatal_cache)?;
    let resumed_from = t.have;
    let report = |have: u64, progress: &mut (dyn FnMut(&Progress) + Send)| {
        progress(&Progress {
            file: file.to_owned(),
            downloaded: have,
            total,
            resumed_from,
        });
    };
    report(t.have, progress);
    let result = loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if t.have + chunk.len() as u64 > limit {
                    break Err(too_large());
                }
                if let Err(e) = out.write_all(&chunk).await {
                    break Err(fatal_cache(e));
                }
                t.hasher.update(&chunk);
                t.have += chunk.len() as u64;
                report(t.have, progress);
            }
            Ok(None) => break Ok(()),
            Err(e) => break Err(http(e)),
        }
    };
    out.flush().await.map_err(fatal_cache)?;
    out.sync_all().await.map_err(fatal_cache)?;
    result?;
    match total {
        Some(total) if t.have < total => Err(Retry::Again(None)),
        Some(total) if t.have > total => {
            restart(part, t).await.map_err(fatal_cache)?;
            Err(Retry::Again(None))
        }
        _ => Ok(Some(())),
    }
}

/// Empties the partial file and the hash.
async fn restart(part: &Path, t: &mut Transfer) -> std::io::Result<()> {
    t.hasher = Sha256::new();
    t.have = 0;
    match tokio::fs::remove_file(part).await {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// `Content-Range: bytes START-END/TOTAL` → (START, TOTAL if known).
fn content_range_start(resp: &reqwest::Response) -> Option<(u64, Option<u64>)> {
    let v = resp.headers().get(header::CONTENT_RANGE)?.to_str().ok()?;
    let rest = v.strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, _end) = range.split_once('-')?;
    Some((start.trim().parse().ok()?, total.trim().parse().ok()))
}
