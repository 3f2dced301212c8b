//! A client for a static HTTP module registry (any file server or bucket) with Outpost's
//! layout: `<registry>/<name>/<name>-<version>/<file>`, where `<file>` is the package
//! (`<name>-<version>-<os>-<arch>.tar.gz`, tried first, then `<name>-<version>.tar.gz`) and
//! `<file>.minisig` its signature.
//!
//! [`Registry::fetch`] guarantees:
//! - **Fail closed**: with no trusted key configured it refuses before any request.
//! - **Verified before use**: the package is streamed into `<cache>/<file>.part` (SHA-256
//!   computed as it streams), verified against the trusted keys once complete, checked to
//!   name the module, version and platform asked for (trusted comment), and only then renamed
//!   to `<cache>/<file>`, with its signature beside it. A package that fails is deleted. A
//!   cached package is verified again before it is returned.
//! - **Resume**: a broken transfer continues with an HTTP `Range` request from the bytes
//!   already there (also across calls, from a leftover `.part`). The reply must be `206` with
//!   a `Content-Range` starting there; otherwise the download starts again from 0.
//! - **Bounded memory**: bodies are streamed chunk by chunk to disk, never held whole.
//! - **Proxy**: an explicit proxy URL ([`ProxySetting::Url`], with `NO_PROXY` honoured), or
//!   the standard environment variables (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`,
//!   `NO_PROXY`), or none. TLS is rustls; no OpenSSL.

mod download;

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Url;

use crate::identity::{ModuleRef, PackageIdentity, Platform};
use crate::sign::{PublicKey, SignError, VerifiedSignature};

/// How requests reach the registry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ProxySetting {
    /// From the standard environment variables (the default).
    #[default]
    FromEnv,
    /// Direct connections only, whatever the environment says.
    None,
    /// Through this proxy (`http://[user:password@]host:port`); `NO_PROXY` is honoured.
    Url(String),
}

/// Everything the registry client needs.
#[derive(Clone, Debug)]
pub struct RegistryConfig {
    /// The registry's base URL (`https://modules.example.com/registry`).
    pub url: String,
    /// How to reach it.
    pub proxy: ProxySetting,
    /// Where packages are downloaded and kept.
    pub cache_dir: PathBuf,
    /// Keys whose signatures are accepted. Empty: nothing is accepted.
    pub trusted_keys: Vec<PublicKey>,
    /// The platform whose package is tried first (default: this machine's).
    pub platform: Platform,
    /// Packages larger than this are refused (default 4 GiB).
    pub max_package_bytes: u64,
    /// Time limit to connect (default 10 s).
    pub connect_timeout: Duration,
    /// Time limit between two reads of a body (default 30 s).
    pub read_timeout: Duration,
    /// Tries of one download in a row that bring no new byte before giving up (default 5).
    pub max_attempts: u32,
}

impl RegistryConfig {
    /// A configuration with the defaults above.
    pub fn new(
        url: impl Into<String>,
        cache_dir: impl Into<PathBuf>,
        trusted_keys: Vec<PublicKey>,
    ) -> Self {
        Self {
            url: url.into(),
            proxy: ProxySetting::FromEnv,
            cache_dir: cache_dir.into(),
            trusted_keys,
            platform: Platform::current(),
            max_package_bytes: 4 << 30,
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(30),
            max_attempts: 5,
        }
    }
}

/// Download progress, reported as bytes arrive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Progress {
    /// The package file being downloaded.
    pub file: String,
    /// Bytes of the package on disk so far.
    pub downloaded: u64,
    /// Its full size, when the server said.
    pub total: Option<u64>,
    /// Bytes that were already there when this transfer (re)started.
    pub resumed_from: u64,
}

/// A package in the cache whose signature checked out.
#[derive(Clone, Debug)]
pub struct FetchedPackage {
    /// The package file in the cache.
    pub path: PathBuf,
    /// Its signature file, beside it.
    pub signature_path: PathBuf,
    /// Who signed it, and the trusted comment.
    pub signature: VerifiedSignature,
    /// What it is (from the trusted comment; pass it to [`crate::unpack::unpack`]).
    pub identity: PackageIdentity,
    /// SHA-256 of the package, lower-case hex.
    pub sha256: String,
    /// Its size in bytes.
    pub size: u64,
    /// Whether it was already in the cache.
    pub from_cache: bool,
}

/// Why a package could not be fetched. Nothing unverified is left under its final name.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// No trusted key is configured: nothing installs.
    #[error("no trusted key is configured: refusing to fetch {module} (fail closed)")]
    NoTrustedKeys {
        /// The module asked for.
        module: ModuleRef,
    },
    /// The registry URL or the proxy URL is not usable.
    #[error("bad URL {url:?}: {reason}")]
    BadUrl {
        /// The URL.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {source}")]
    Client {
        /// The cause.
        source: reqwest::Error,
    },
    /// A request failed (after the retries, for downloads).
    #[error("{url}: {source}")]
    Http {
        /// The URL.
        url: String,
        /// The cause.
        source: reqwest::Error,
    },
    /// The server answered with an unexpected status.
    #[error("{url}: HTTP status {status}")]
    Status {
        /// The URL.
        url: String,
        /// The status code.
        status: u16,
    },
    /// Neither the platform package nor the generic one is in the registry.
    #[error("{module} is not in the registry (tried {})", .tried.join(", "))]
    NotFound {
        /// The module asked for.
        module: ModuleRef,
        /// The signature URLs tried.
        tried: Vec<String>,
    },
    /// The package is larger than [`RegistryConfig::max_package_bytes`].
    #[error("{url}: larger than {limit} bytes")]
    TooLarge {
        /// The URL.
        url: String,
        /// The limit.
        limit: u64,
    },
    /// The download kept failing.
    #[error("{url}: gave up after {attempts} tries without progress")]
    GaveUp {
        /// The URL.
        url: String,
        /// Tries made.
        attempts: u32,
    },
    /// The cache could not be read or written.
    #[error("{}: {source}", .path.display())]
    Cache {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The package's signature did not check out.
    #[error("{file}: {source}")]
    Signature {
        /// The package file.
        file: String,
        /// Why.
        source: SignError,
    },
    /// The signature is good but names another package than the one asked for (a signed
    /// 1.0 served as 2.0).
    #[error("{file}: signed as {signed}, but {expected} was asked for")]
    WrongPackage {
        /// The package file.
        file: String,
        /// What was asked for.
        expected: Box<PackageIdentity>,
        /// What the signature names.
        signed: Box<PackageIdentity>,
    },
}

/// A registry client. Cheap to share: clone the config, not the client.
#[derive(Debug)]
pub struct Registry {
    client: reqwest::Client,
    base: Url,
    config: RegistryConfig,
}

impl Registry {
    /// Builds the client (TLS, proxy, time limits).
    pub fn new(config: RegistryConfig) -> Result<Self, RegistryError> {
        let bad = |url: &str, reason: String| RegistryError::BadUrl {
            url: url.to_owned(),
            reason,
        };
        let mut text = config.url.clone();
        if !text.ends_with('/') {
            text.push('/');
        }
        let base = Url::parse(&text).map_err(|e| bad(&config.url, e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(bad(
                &config.url,
                "only http and https registries".to_owned(),
            ));
        }
        let mut builder = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .read_timeout(config.read_timeout)
            .user_agent(concat!("reeve/", env!("CARGO_PKG_VERSION")));
        builder = match &config.proxy {
            ProxySetting::FromEnv => builder,
            ProxySetting::None => builder.no_proxy(),
            ProxySetting::Url(url) => {
                let proxy = reqwest::Proxy::all(url.as_str())
                    .map_err(|e| bad(url, e.to_string()))?
                    .no_proxy(reqwest::NoProxy::from_env());
                builder.proxy(proxy)
            }
        };
        let client = builder
            .build()
            .map_err(|source| RegistryError::Client { source })?;
        Ok(Self {
            client,
            base,
            config,
        })
    }

    /// The URL of `file` of `module`: `<registry>/<name>/<name>-<version>/<file>`.
    pub fn file_url(&self, module: &ModuleRef, file: &str) -> Result<Url, RegistryError> {
        let rel = format!("{0}/{0}-{1}/{file}", module.name, module.version);
        self.base.join(&rel).map_err(|e| RegistryError::BadUrl {
            url: rel,
            reason: e.to_string(),
        })
    }

    /// The cache directory.
    pub fn cache_dir(&self) -> &Path {
        &self.config.cache_dir
    }

    /// Fetches `module` into the cache (platform package first, then the generic one),
    /// verifies it, and returns it. `progress` is called as bytes arrive. See the module
    /// docs for the guarantees.
    pub async fn fetch(
        &self,
        module: &ModuleRef,
        progress: &mut (dyn FnMut(&Progress) + Send),
    ) -> Result<FetchedPackage, RegistryError> {
        if self.config.trusted_keys.is_empty() {
            return Err(RegistryError::NoTrustedKeys {
                module: module.clone(),
            });
        }
        let mut platforms = Vec::new();
        if self.config.platform != Platform::Any {
            platforms.push(self.config.platform.clone());
        }
        platforms.push(Platform::Any);
        let mut tried = Vec::new();
        for platform in platforms {
            let identity = PackageIdentity {
                name: module.name.clone(),
                version: module.version.clone(),
                platform,
            };
            let file = identity.file_name();
            let sig_url = self.file_url(module, &format!("{file}.minisig"))?;
            tried.push(sig_url.to_string());
            let Some(signature) = self.get_small(&sig_url).await? else {
                continue;
            };
            return download::fetch_package(self, &identity, signature, progress).await;
        }
        Err(RegistryError::NotFound {
            module: module.clone(),
            tried,
        })
    }

    /// GETs a small text file (a signature); `None` on 404.
    async fn get_small(&self, url: &Url) -> Result<Option<String>, RegistryError> {
        const MAX: u64 = 64 * 1024;
        let http = |source| RegistryError::Http {
            url: url.to_string(),
            source,
        };
        let mut resp = self.client.get(url.clone()).send().await.map_err(http)?;
        match resp.status().as_u16() {
            200 => {}
            404 => return Ok(None),
            status => {
                return Err(RegistryError::Status {
                    url: url.to_string(),
                    status,
                });
            }
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(http)? {
            body.extend_from_slice(&chunk);
            if body.len() as u64 > MAX {
                return Err(RegistryError::TooLarge {
                    url: url.to_string(),
                    limit: MAX,
                });
            }
        }
        Ok(Some(String::from_utf8_lossy(&body).into_owned()))
    }
}
