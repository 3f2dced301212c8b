//! Pinning the hub's TLS certificate, for the operator's API calls. The relay does not need
//! it (it pins the hub's Ed25519 key and checks it in the first frames), but an operator's
//! calls carry a bearer token from the first request: whoever terminates TLS would see it.
//! So the CLI names the certificate it expects by its SHA-256 fingerprint (`sha256:` and 64
//! lowercase hex digits, over the certificate's DER), and the handshake fails unless the
//! hub presents exactly that certificate (and proves it holds its key, as TLS does).

use std::fmt;
use std::str::FromStr;

/// The SHA-256 of a certificate's DER encoding.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CertFingerprint([u8; 32]);

impl CertFingerprint {
    /// The fingerprint of the certificate `der`.
    pub fn of(der: &[u8]) -> Self {
        use sha2::Digest;
        Self(sha2::Sha256::digest(der).into())
    }
}

impl fmt::Display for CertFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sha256:")?;
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for CertFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Why a text is not a certificate fingerprint.
#[derive(Debug, thiserror::Error)]
#[error(
    "{text:?} is not a certificate fingerprint ({why}): expected sha256: and 64 hex digits, \
     e.g. as `reeve hub cert-fingerprint` prints it (openssl's AB:CD:… form is taken too)"
)]
pub struct BadFingerprint {
    text: String,
    why: &'static str,
}

impl FromStr for CertFingerprint {
    type Err = BadFingerprint;

    /// `sha256:HEX` or `HEX`, either case, the bytes optionally separated by colons.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = |why| BadFingerprint {
            text: text.to_string(),
            why,
        };
        let t = text.trim();
        let hex = match t.split_once(':') {
            Some((alg, rest)) if alg.eq_ignore_ascii_case("sha256") => rest,
            Some((alg, _)) if !alg.bytes().all(|b| b.is_ascii_hexdigit()) => {
                return Err(bad("only SHA-256 fingerprints are taken"));
            }
            _ => t,
        };
        let digits: String = if hex.contains(':') {
            let parts: Vec<&str> = hex.split(':').collect();
            if parts.iter().any(|p| p.len() != 2) {
                return Err(bad("colons must separate pairs of hex digits"));
            }
            parts.concat()
        } else {
            hex.to_string()
        };
        if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("not hex"));
        }
        if digits.len() != 64 {
            return Err(bad(if digits.len() == 40 {
                "40 digits: that is a SHA-1, use SHA-256"
            } else {
                "a SHA-256 has 64 hex digits"
            }));
        }
        let mut out = [0u8; 32];
        for (i, o) in out.iter_mut().enumerate() {
            *o = u8::from_str_radix(&digits[2 * i..2 * i + 2], 16).map_err(|_| bad("not hex"))?;
        }
        Ok(Self(out))
    }
}

/// The hub presented another certificate than the pinned one: the handshake was
/// abandoned before anything was sent.
#[derive(Debug, thiserror::Error)]
#[error(
    "the hub's TLS certificate does not match the pinned fingerprint: expected {expected}, \
     the server at {addr} presented {presented}; someone may be intercepting the connection, \
     nothing was sent"
)]
pub struct CertMismatch {
    /// The server's `host:port`.
    pub addr: String,
    /// The pinned fingerprint.
    pub expected: CertFingerprint,
    /// What the server presented.
    pub presented: CertFingerprint,
}

/// Called with the certificate of a hub seen for the first time, after the handshake and
/// before any request: it records it (or refuses it with an error).
pub type OnFirstUse = Box<dyn FnMut(&CertFingerprint) -> anyhow::Result<()> + Send>;

/// How an API connection judges the hub's TLS certificate.
pub enum ServerCert {
    /// Any certificate: trust comes from elsewhere (the hub key a join token names), or
    /// there is no TLS (`http://` on loopback).
    Any,
    /// Only the certificate with this fingerprint.
    Pinned(CertFingerprint),
    /// Trust on first use: the first certificate seen is handed to the function before any
    /// request is sent, then pinned for the connection's later reconnects.
    FirstUse(OnFirstUse),
}

impl fmt::Debug for ServerCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("Any"),
            Self::Pinned(p) => write!(f, "Pinned({p})"),
            Self::FirstUse(_) => f.write_str("FirstUse"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    #[test]
    fn parses_every_accepted_form_to_the_same_value() {
        let want: CertFingerprint = format!("sha256:{HEX}").parse().expect("canonical");
        assert_eq!(want.to_string(), format!("sha256:{HEX}"));
        let colons = HEX
            .as_bytes()
            .chunks(2)
            .map(|c| std::str::from_utf8(c).expect("ascii"))
            .collect::<Vec<_>>()
            .join(":");
        for form in [
            HEX.to_string(),
            HEX.to_uppercase(),
            format!("SHA256:{}", HEX.to_uppercase()),
            format!("sha256:{colons}"),
            colons.to_uppercase(),
            format!("  sha256:{HEX}\n"),
        ] {
            assert_eq!(
                form.parse::<CertFingerprint>().expect(&form),
                want,
                "{form}"
            );
        }
    }

    #[test]
    fn refuses_anything_else_saying_why() {
        for (text, why) in [
            ("", "64 hex digits"),
            ("sha256:", "64 hex digits"),
            (&HEX[..62], "64 hex digits"),
            (&format!("{HEX}00"), "64 hex digits"),
            (&HEX[..40], "SHA-1"),
            (&format!("sha256:{}zz", &HEX[..62]), "not hex"),
            (&format!("sha1:{HEX}"), "only SHA-256"),
            (&format!("md5:{HEX}"), "only SHA-256"),
            (&format!("sha256:sha256:{HEX}"), "pairs"),
            ("0:01:12", "pairs"),
            (&format!("sha256:{HEX}:"), "pairs"),
            (&format!("sha256:{}", HEX.replace('a', "é")), "not hex"),
        ] {
            let e = text.parse::<CertFingerprint>().expect_err(text).to_string();
            assert!(e.contains(why), "{text:?}: {e}");
            assert!(e.contains("is not a certificate fingerprint"), "{e}");
        }
    }

    #[test]
    fn of_is_the_sha256_of_the_bytes() {
        // SHA-256 of "abc" (FIPS 180-2's example).
        assert_eq!(
            CertFingerprint::of(b"abc").to_string(),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
