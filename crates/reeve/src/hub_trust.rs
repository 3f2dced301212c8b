//! Which TLS certificate the operator commands (`reeve send`, `nodes`, `messages`, …)
//! accept from the hub. Their first request already carries the operator's bearer token,
//! so the certificate must be the hub's own: a man in the middle with a certificate of his
//! own would otherwise read the token.
//!
//! - `--hub-cert SHA256` (`REEVE_HUB_CERT`): only the certificate with that fingerprint
//!   (`reeve hub cert-fingerprint` prints it on the hub's machine).
//! - otherwise trust on first use, like ssh's `known_hosts`: `$XDG_CONFIG_HOME/reeve/known_hubs`
//!   (`~/.config/reeve/known_hubs`) holds one line per hub, `host:port sha256:HEX`. The first
//!   contact records the certificate (one line on stderr says so); later contacts must
//!   present the same one.
//!
//! A refusal happens in the TLS handshake, before anything is sent. There is no switch to
//! accept any certificate: a hub whose certificate really changed is fixed by passing its
//! new fingerprint, or by removing its line. A plain `http://` hub URL (loopback) has no
//! certificate, so `--hub-cert` is refused with it.

use anyhow::{Context, Result, anyhow, bail};
use reeve_agent::node::cert_pin::{CertFingerprint, CertMismatch, ServerCert};
use reeve_agent::node::transport::{self, ApiConn, Call};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The known hubs file: `$XDG_CONFIG_HOME/reeve/known_hubs`, else
/// `$HOME/.config/reeve/known_hubs`; `None` when neither is set.
pub fn known_hubs_file() -> Option<PathBuf> {
    let dir = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|d| d.is_absolute())
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|h| !h.is_empty())
                .map(|h| PathBuf::from(h).join(".config"))
        })?;
    Some(dir.join("reeve").join("known_hubs"))
}

/// What the known hubs file says about one hub: its fingerprint and the line (from 1).
#[derive(Debug, PartialEq, Eq)]
pub struct Known {
    /// The recorded fingerprint.
    pub cert: CertFingerprint,
    /// Where: its line number, from 1.
    pub line: usize,
}

/// The first line of `text` about `addr` (`host:port`). Blank lines and `#` comments are
/// skipped, and lines about other hubs are not judged; a line about `addr` that is not
/// `host:port sha256:HEX` is an error (never taken for "unknown").
pub fn lookup(text: &str, addr: &str) -> Result<Option<Known>> {
    for (i, raw) in text.lines().enumerate() {
        let mut words = raw.split_whitespace();
        if words.next() != Some(addr) {
            continue;
        }
        let line = i + 1;
        let (Some(cert), None) = (words.next(), words.next()) else {
            bail!("line {line} is not `{addr} sha256:HEX`");
        };
        let cert = cert
            .parse()
            .with_context(|| format!("line {line} about {addr}"))?;
        return Ok(Some(Known { cert, line }));
    }
    Ok(None)
}

/// `text` with a line for `addr` added; every other line is kept as it was.
pub fn with_entry(text: &str, addr: &str, cert: &CertFingerprint) -> String {
    let mut out = text.to_string();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(&format!("{addr} {cert}\n"));
    out
}

fn read(file: &Path) -> Result<String> {
    match std::fs::read_to_string(file) {
        Ok(t) => Ok(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", file.display())),
    }
}

/// What the known hubs `file` says about `addr`.
pub fn lookup_file(file: &Path, addr: &str) -> Result<Option<Known>> {
    lookup(&read(file)?, addr).with_context(|| {
        format!(
            "{} is damaged: fix or remove that line (then reeve trusts the hub on first use again)",
            file.display()
        )
    })
}

/// Records that `addr` presents `cert` in `file`, unless a line about it is there by now
/// (another `reeve` may have been first): then that line is returned. The directory is
/// created if missing (mode 0700); the file is replaced whole (a temporary file, synced,
/// renamed; mode 0600), under a lock on the directory so two `reeve`s adding hubs at once
/// lose neither line.
pub fn record(file: &Path, addr: &str, cert: &CertFingerprint) -> Result<Option<Known>> {
    let dir = file
        .parent()
        .context("the known hubs file has no directory")?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    // The directory is the lock (flock), so no lock file is left beside.
    let lock =
        std::fs::File::open(dir).with_context(|| format!("cannot open {}", dir.display()))?;
    lock.lock()
        .with_context(|| format!("cannot lock {}", dir.display()))?;
    let text = read(file)?;
    if let Some(known) = lookup(&text, addr)
        .with_context(|| format!("{} is damaged: fix or remove that line", file.display()))?
    {
        return Ok(Some(known));
    }
    let tmp = file.with_extension(format!("tmp.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let written = (|| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(with_entry(&text, addr, cert).as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, file)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot write {}", file.display()));
    }
    let _ = lock.sync_all();
    Ok(None)
}

/// Where the expected certificate came from: what to do about a mismatch depends on it.
#[derive(Debug, Clone)]
pub enum PinSource {
    /// `--hub-cert` or `REEVE_HUB_CERT`.
    Flag,
    /// A line of the known hubs file.
    KnownHubs {
        /// The file.
        file: PathBuf,
        /// The line, from 1.
        line: usize,
    },
    /// Nothing yet: the first certificate is recorded in this file.
    FirstUse(PathBuf),
    /// No TLS (`http://`).
    Plain,
}

/// A refused certificate, explained (not "cannot reach the hub").
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Refused(String);

/// The explanation of `m` for the user, by where the pin came from.
fn explain(m: &CertMismatch, source: &PinSource) -> Refused {
    let (from, fix) = match source {
        PinSource::KnownHubs { file, line } => (
            format!("recorded on first use in {}, line {line}", file.display()),
            format!(
                "If the hub's certificate really changed (a new data directory), check the new \
                 fingerprint on the hub's machine (`reeve hub cert-fingerprint`), then remove \
                 line {line} of {} or pass it with --hub-cert (REEVE_HUB_CERT).",
                file.display()
            ),
        ),
        PinSource::FirstUse(file) => (
            format!(
                "recorded on first use in {} by this command",
                file.display()
            ),
            format!(
                "If the hub's certificate really changed, check the new fingerprint on the hub's \
                 machine (`reeve hub cert-fingerprint`), then remove the hub's line of {} or \
                 pass it with --hub-cert (REEVE_HUB_CERT).",
                file.display()
            ),
        ),
        PinSource::Flag | PinSource::Plain => (
            "given with --hub-cert or REEVE_HUB_CERT".to_string(),
            "If the hub's certificate really changed, take its fingerprint on the hub's machine \
             (`reeve hub cert-fingerprint`) and pass that instead."
                .to_string(),
        ),
    };
    Refused(format!(
        "the hub at {} presented a TLS certificate that does not match the pinned fingerprint\n  \
         pinned:    {} ({from})\n  presented: {}\n\
         This could be an interception (a man in the middle): nothing was sent, not even the \
         API token. {fix}",
        m.addr, m.expected, m.presented
    ))
}

/// The operator's connection to the hub's API, with its certificate judged as above.
#[derive(Debug)]
pub struct HubApi {
    url: String,
    api: ApiConn,
    source: PinSource,
}

impl HubApi {
    /// A connection to the hub at `url` (through `proxy`), pinned to `flag` when given,
    /// else to what the known hubs file says, else trusting on first use.
    pub fn new(url: &str, proxy: Option<&str>, flag: Option<CertFingerprint>) -> Result<Self> {
        let (cert, source) = server_cert(url, flag)?;
        Ok(Self {
            url: url.to_string(),
            api: ApiConn::new(url, proxy, cert),
            source,
        })
    }

    /// One JSON request; the status and the JSON body.
    pub async fn call(&mut self, call: Call<'_>) -> Result<(u16, serde_json::Value)> {
        self.api.call(call).await.map_err(|e| {
            if e.chain().any(|c| c.is::<Refused>()) {
                return e;
            }
            match e.chain().find_map(|c| c.downcast_ref::<CertMismatch>()) {
                Some(m) => explain(m, &self.source).into(),
                None => e.context(format!("cannot reach the hub at {}", self.url)),
            }
        })
    }
}

fn server_cert(url: &str, flag: Option<CertFingerprint>) -> Result<(ServerCert, PinSource)> {
    let (_, addr) = transport::host_port(url)?;
    if !url.starts_with("https://") {
        if flag.is_some() {
            bail!(
                "--hub-cert (REEVE_HUB_CERT) needs an https:// hub URL: {url} has no certificate to check"
            );
        }
        return Ok((ServerCert::Any, PinSource::Plain));
    }
    if let Some(pin) = flag {
        return Ok((ServerCert::Pinned(pin), PinSource::Flag));
    }
    let file = known_hubs_file().ok_or_else(|| {
        anyhow!(
            "neither XDG_CONFIG_HOME nor HOME is set, so there is no known_hubs file to trust \
             the hub's certificate on first use: pass --hub-cert (REEVE_HUB_CERT)"
        )
    })?;
    if let Some(k) = lookup_file(&file, &addr)? {
        let source = PinSource::KnownHubs { file, line: k.line };
        return Ok((ServerCert::Pinned(k.cert), source));
    }
    let recorded_in = file.clone();
    let first_use = move |cert: &CertFingerprint| -> Result<()> {
        match record(&file, &addr, cert)? {
            None => {
                eprintln!(
                    "reeve: trusting the hub at {addr} on first use, certificate {cert} (recorded in {})",
                    file.display()
                );
                Ok(())
            }
            Some(k) if k.cert == *cert => Ok(()),
            // Another `reeve` recorded a different certificate in the meantime.
            Some(k) => {
                let m = CertMismatch {
                    addr: addr.clone(),
                    expected: k.cert,
                    presented: *cert,
                };
                let source = PinSource::KnownHubs {
                    file: file.clone(),
                    line: k.line,
                };
                Err(explain(&m, &source).into())
            }
        }
    };
    Ok((
        ServerCert::FirstUse(Box::new(first_use)),
        PinSource::FirstUse(recorded_in),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn fp(b: u8) -> CertFingerprint {
        CertFingerprint::of(&[b])
    }

    #[test]
    fn lookup_finds_the_first_line_about_the_hub_and_skips_the_rest() {
        let text = format!(
            "# reeve's known hubs\n\nother:7443 garbage that is not ours to judge\n\
             hub.example.com:7443 {}\n  hub.example.com:7443   {}\n[::1]:7443 {}",
            fp(1),
            fp(2),
            fp(3)
        );
        assert_eq!(
            lookup(&text, "hub.example.com:7443").expect("lookup"),
            Some(Known {
                cert: fp(1),
                line: 4
            })
        );
        assert_eq!(
            lookup(&text, "[::1]:7443").expect("lookup"),
            Some(Known {
                cert: fp(3),
                line: 6
            })
        );
        assert_eq!(lookup(&text, "hub.example.com:443").expect("lookup"), None);
        assert_eq!(lookup("", "a:1").expect("lookup"), None);
    }

    #[test]
    fn a_damaged_line_about_the_hub_is_an_error_not_unknown() {
        for bad in [
            "h:1\n",
            "h:1 sha256:00\n",
            "h:1 nonsense\n",
            &format!("h:1 {} extra\n", fp(1)),
        ] {
            let e = lookup(bad, "h:1").expect_err(bad);
            assert!(format!("{e:#}").contains("line 1"), "{bad:?}: {e:#}");
        }
    }

    #[test]
    fn with_entry_keeps_every_line_and_ends_with_a_newline() {
        let before = "# mine\nx:1 whatever\nno newline at the end";
        let after = with_entry(before, "h:7443", &fp(9));
        assert_eq!(after, format!("{before}\nh:7443 {}\n", fp(9)));
        assert_eq!(with_entry("", "h:1", &fp(9)), format!("h:1 {}\n", fp(9)));
    }

    #[test]
    fn record_creates_the_directory_writes_0600_and_keeps_other_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("config/reeve/known_hubs");
        assert_eq!(record(&file, "a:1", &fp(1)).expect("record"), None);
        let mode = std::fs::metadata(&file).expect("file").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // A hand-written line and a comment survive the next record.
        let mut text = std::fs::read_to_string(&file).expect("read");
        text.push_str("# a comment\nb:2 not-a-fingerprint");
        std::fs::write(&file, &text).expect("write");
        assert_eq!(record(&file, "c:3", &fp(3)).expect("record"), None);
        assert_eq!(
            std::fs::read_to_string(&file).expect("read"),
            format!(
                "a:1 {}\n# a comment\nb:2 not-a-fingerprint\nc:3 {}\n",
                fp(1),
                fp(3)
            )
        );
        let mode = std::fs::metadata(&file).expect("file").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // A hub recorded already is not recorded twice, nor overwritten.
        assert_eq!(
            record(&file, "a:1", &fp(7)).expect("record"),
            Some(Known {
                cert: fp(1),
                line: 1
            })
        );
        assert_eq!(
            lookup_file(&file, "a:1").expect("lookup"),
            Some(Known {
                cert: fp(1),
                line: 1
            })
        );
        // No temporary file is left behind.
        let names: Vec<String> = std::fs::read_dir(file.parent().expect("dir"))
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names == ["known_hubs"], "{names:?}");
    }

    #[test]
    fn concurrent_records_lose_no_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("known_hubs");
        std::thread::scope(|s| {
            for i in 0..8u8 {
                let file = &file;
                s.spawn(move || record(file, &format!("h{i}:1"), &fp(i)).expect("record"));
            }
        });
        let text = std::fs::read_to_string(&file).expect("read");
        for i in 0..8u8 {
            assert_eq!(
                lookup(&text, &format!("h{i}:1"))
                    .expect("lookup")
                    .map(|k| k.cert),
                Some(fp(i)),
                "{text}"
            );
        }
    }

    #[test]
    fn a_pin_needs_https() {
        let e = server_cert("http://127.0.0.1:7080", Some(fp(1))).expect_err("plain");
        assert!(e.to_string().contains("needs an https://"), "{e}");
        assert!(matches!(
            server_cert("https://127.0.0.1:7443", Some(fp(1))),
            Ok((ServerCert::Pinned(p), PinSource::Flag)) if p == fp(1)
        ));
    }
}
