//! Signatures in minisign's format, so the standard `minisign` tool can sign and verify
//! reeve's packages and reeve verifies the tool's.
//!
//! - Keys are minisign key files: a public key file (`untrusted comment: …` then a base64
//!   line; the bare base64 line alone is accepted too) and a secret key file. reeve makes
//!   **unencrypted** secret keys ([`generate_keypair`], like `minisign -G -W`); encrypted ones
//!   (`minisign -G`) are read when the password is given, and the tool's unencrypted keys
//!   (`minisign -G -W`, whose checksum it leaves zero) are read too.
//! - A signature is a `.minisig` file, pre-hashed (BLAKE2b, as `minisign` ≥ 0.8 writes by
//!   default; legacy signatures are refused). Its **trusted comment** is signed too: for a
//!   package it is exactly `reeve-module name=NAME version=VERSION platform=PLATFORM`
//!   ([`PackageIdentity::trusted_comment`]). To sign with the tool:
//!   `minisign -S -s KEY -m FILE -t "reeve-module name=my-server version=1.0.0 platform=any"`.
//! - [`verify`] takes the trusted keys and **refuses when there are none** (fail closed).

use std::fs;
use std::io::{self, Read, Seek};
use std::path::{Path, PathBuf};

use minisign::{PublicKeyBox, SecretKeyBox, SignatureBox};

use crate::identity::PackageIdentity;
use crate::pack::{PackError, read_package_identity};

/// Why keys could not be read or made, or a signature could not be made or verified.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// A key or signature file could not be read.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The text is not a minisign public key.
    #[error("not a minisign public key: {reason}")]
    BadPublicKey {
        /// What the parser said.
        reason: String,
    },
    /// The text is not a usable minisign secret key (or the password is wrong).
    #[error("not a usable minisign secret key: {reason}")]
    BadSecretKey {
        /// What the parser said.
        reason: String,
    },
    /// The secret key is encrypted and no password was given.
    #[error("the secret key is encrypted: give its password")]
    EncryptedKey,
    /// The text is not a minisign signature.
    #[error("not a minisign signature: {reason}")]
    BadSignature {
        /// What the parser said.
        reason: String,
    },
    /// No trusted key is configured: nothing is accepted.
    #[error("no trusted key is configured: refusing every package (fail closed)")]
    NoTrustedKeys,
    /// The signature was made by a key that is not trusted.
    #[error("signed by key {key_id}, which is not trusted")]
    UntrustedKey {
        /// The signing key's id.
        key_id: String,
    },
    /// The signature does not match the data (or its trusted comment was altered).
    #[error("signature by key {key_id} does not match: {reason}")]
    Invalid {
        /// The signing key's id.
        key_id: String,
        /// What failed.
        reason: String,
    },
    /// Signing failed.
    #[error("signing failed: {reason}")]
    Sign {
        /// What failed.
        reason: String,
    },
    /// The trusted comment does not name a reeve package.
    #[error("{reason}")]
    BadComment {
        /// What is wrong.
        reason: String,
    },
    /// The archive to sign does not say what it is.
    #[error(transparent)]
    Package(#[from] PackError),
}

fn read(path: &Path) -> Result<String, SignError> {
    fs::read_to_string(path).map_err(|source| SignError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn key_id_of(keynum: &[u8]) -> String {
    let mut b = [0u8; 8];
    b.copy_from_slice(&keynum[..8.min(keynum.len())]);
    format!("{:016X}", u64::from_le_bytes(b))
}

/// A public key that signatures are checked against.
#[derive(Clone, Debug)]
pub struct PublicKey(minisign::PublicKey);

impl PublicKey {
    /// Parses a minisign public key file's text, or its bare base64 line.
    pub fn from_text(text: &str) -> Result<Self, SignError> {
        let text = text.trim();
        let parsed = if text.lines().count() == 1 {
            minisign::PublicKey::from_base64(text)
        } else {
            PublicKeyBox::from_string(text).and_then(PublicKeyBox::into_public_key)
        };
        parsed.map(Self).map_err(|e| SignError::BadPublicKey {
            reason: e.to_string(),
        })
    }

    /// Reads a minisign public key file.
    pub fn from_file(path: &Path) -> Result<Self, SignError> {
        Self::from_text(&read(path)?)
    }

    /// The key id as `minisign` prints it (16 upper-case hex digits).
    pub fn key_id(&self) -> String {
        key_id_of(self.0.keynum())
    }

    /// The key as a minisign public key file.
    pub fn to_file_text(&self) -> String {
        format!(
            "untrusted comment: minisign public key {}\n{}\n",
            self.key_id(),
            self.0.to_base64()
        )
    }
}

/// A secret key that signs packages.
#[derive(Clone)]
pub struct SecretKey(minisign::SecretKey);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey({})", key_id_of(self.0.keynum()))
    }
}

impl SecretKey {
    /// Parses a minisign secret key file's text. An encrypted key needs its `password`.
    pub fn from_text(text: &str, password: Option<String>) -> Result<Self, SignError> {
        let bad = |e: minisign::PError| SignError::BadSecretKey {
            reason: e.to_string(),
        };
        let boxed = || SecretKeyBox::from_string(text).map_err(bad);
        match boxed()?.into_unencrypted_secret_key() {
            Ok(key) => Ok(Self(key)),
            Err(e) if password.is_none() && e.to_string().contains("Corrupted") => {
                tool_unencrypted_key(text).ok_or_else(|| bad(e)).map(Self)
            }
            Err(e) => match password {
                Some(password) => boxed()?
                    .into_secret_key(Some(password))
                    .map(Self)
                    .map_err(bad),
                None if e.to_string().contains("encrypted") => Err(SignError::EncryptedKey),
                None => Err(bad(e)),
            },
        }
    }

    /// Reads a minisign secret key file.
    pub fn from_file(path: &Path, password: Option<String>) -> Result<Self, SignError> {
        Self::from_text(&read(path)?, password)
    }

    /// The key id (the same as its public key's).
    pub fn key_id(&self) -> String {
        key_id_of(self.0.keynum())
    }

    /// The key as an unencrypted minisign secret key file. Keep it secret.
    pub fn to_file_text(&self) -> Result<String, SignError> {
        self.0
            .to_box(None)
            .map(|b| b.to_string())
            .map_err(|e| SignError::BadSecretKey {
                reason: e.to_string(),
            })
    }

    /// The matching public key.
    pub fn public_key(&self) -> Result<PublicKey, SignError> {
        minisign::PublicKey::from_secret_key(&self.0)
            .map(PublicKey)
            .map_err(|e| SignError::BadSecretKey {
                reason: e.to_string(),
            })
    }
}

/// Reads an unencrypted secret key as `minisign -G -W` writes it: the tool leaves the
/// key's checksum zero, which the `minisign` crate takes for corruption.
fn tool_unencrypted_key(text: &str) -> Option<minisign::SecretKey> {
    use base64::Engine;
    let line = text.lines().nth(1)?.trim();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(line)
        .ok()?;
    // sig_alg(2) kdf_alg(2) chk_alg(2) salt(32) opslimit(8) memlimit(8) keynum(8) sk(64) chk(32)
    if bytes.len() != 158 || bytes[2..4] != [0, 0] || bytes[126..].iter().any(|b| *b != 0) {
        return None;
    }
    minisign::SecretKey::from_bytes(&bytes).ok()
}

/// A new key pair.
#[derive(Clone, Debug)]
pub struct KeyPair {
    /// Give this to the agents (their trusted keys).
    pub public: PublicKey,
    /// Keep this with whoever signs packages.
    pub secret: SecretKey,
}

/// Makes a new Ed25519 key pair with an **unencrypted** secret key (as `minisign -G -W`).
pub fn generate_keypair() -> Result<KeyPair, SignError> {
    let kp = minisign::KeyPair::generate_unencrypted_keypair().map_err(|e| SignError::Sign {
        reason: e.to_string(),
    })?;
    Ok(KeyPair {
        public: PublicKey(kp.pk),
        secret: SecretKey(kp.sk),
    })
}

/// Signs `data` (streamed) with `key`; returns the `.minisig` file's text.
pub fn sign(data: impl Read, key: &SecretKey, trusted_comment: &str) -> Result<String, SignError> {
    if trusted_comment.contains('\n') || trusted_comment.contains('\r') {
        return Err(SignError::BadComment {
            reason: "a trusted comment is one line".to_owned(),
        });
    }
    minisign::sign(None, &key.0, data, Some(trusted_comment), None)
        .map(|b| b.into_string())
        .map_err(|e| SignError::Sign {
            reason: e.to_string(),
        })
}

/// Signs the package at `archive` with the trusted comment naming what its manifest says it
/// is; returns the `.minisig` text (conventionally written to `<archive>.minisig`).
pub fn sign_package(archive: &Path, key: &SecretKey) -> Result<String, SignError> {
    let identity = read_package_identity(archive)?;
    let file = fs::File::open(archive).map_err(|source| SignError::Io {
        path: archive.to_path_buf(),
        source,
    })?;
    sign(io::BufReader::new(file), key, &identity.trusted_comment())
}

/// A signature that checked out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedSignature {
    /// Which trusted key signed.
    pub key_id: String,
    /// The signed trusted comment.
    pub trusted_comment: String,
}

impl VerifiedSignature {
    /// The package the trusted comment names.
    pub fn identity(&self) -> Result<PackageIdentity, SignError> {
        PackageIdentity::from_trusted_comment(&self.trusted_comment)
            .map_err(|reason| SignError::BadComment { reason })
    }
}

/// Checks `signature` (a `.minisig` text) over `data` (streamed, read once) against the
/// trusted `keys`. No keys: [`SignError::NoTrustedKeys`].
pub fn verify(
    data: impl Read + Seek,
    signature: &str,
    keys: &[PublicKey],
) -> Result<VerifiedSignature, SignError> {
    if keys.is_empty() {
        return Err(SignError::NoTrustedKeys);
    }
    let sig = SignatureBox::from_string(signature).map_err(|e| SignError::BadSignature {
        reason: e.to_string(),
    })?;
    let key_id = key_id_of(sig.keynum());
    let key = keys
        .iter()
        .find(|k| k.0.keynum() == sig.keynum())
        .ok_or_else(|| SignError::UntrustedKey {
            key_id: key_id.clone(),
        })?;
    minisign::verify(&key.0, &sig, data, true, false, false).map_err(|e| SignError::Invalid {
        key_id: key_id.clone(),
        reason: e.to_string(),
    })?;
    let trusted_comment = sig.trusted_comment().map_err(|e| SignError::BadSignature {
        reason: e.to_string(),
    })?;
    Ok(VerifiedSignature {
        key_id,
        trusted_comment,
    })
}

/// [`verify`] for a file.
pub fn verify_file(
    path: &Path,
    signature: &str,
    keys: &[PublicKey],
) -> Result<VerifiedSignature, SignError> {
    if keys.is_empty() {
        return Err(SignError::NoTrustedKeys);
    }
    let file = fs::File::open(path).map_err(|source| SignError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    verify(io::BufReader::new(file), signature, keys)
}
