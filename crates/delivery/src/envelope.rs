//! The signed envelope (DESIGN.md §2.1).
//!
//! On the wire an envelope is JSON `{"v": 1, "owner": KEY, "body": B64, "sig": B64}`:
//! `body` is the exact bytes of a [`Sequenced`] record, signed by the stream's `owner`
//! (sequencing signature). A `Sequenced` record carries the stream, the `seq`, and either an
//! [`Authorized`] request — the exact bytes of a [`Request`] signed by whoever asks
//! (authorization signature) — or a skip marker for a `seq` that will never come.
//!
//! [`open`] checks, in this order, and reports the first failure: size; outer signature by
//! an expected owner; the record's owner is the signer; the stream's receiver is this node;
//! for a request, the authorization signature by a trusted signer, the request's `to` is
//! this node, and it has not expired (on hub-adjusted time). When the owner authorized the
//! request itself and it is addressed to this receiver, the sequencing signature already
//! covers it, and its authorization signature is not checked a second time. Replays and reordering are the
//! stream's business ([`crate::stream`]) and the inbox's (ids).

use crate::keys::{KeyPair, PublicKey, verify};
use crate::lane::{Lane, is_control};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

/// Domain of the authorization signature.
pub const AUTH_DOMAIN: &[u8] = b"reeve-authorization-v1\0";
/// Domain of the sequencing signature.
pub const SEQ_DOMAIN: &[u8] = b"reeve-sequencing-v1\0";
/// The hub's name as a receiver (reserved: no node may take it).
pub const HUB: &str = "hub";
/// Largest envelope accepted, in bytes.
pub const MAX_ENVELOPE: usize = 1 << 20;

/// Where a reply goes at the requester.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ReplyTo {
    /// `console`, `file` or `file.append`.
    pub method: String,
    /// Relative directory in the requester's data folder (file replies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directory: Option<String>,
    /// File name (file replies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_name: Option<String>,
}

/// What is asked, by whom, of whom. Signed by the authorizer.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// Unique id (ULID).
    pub id: String,
    /// Who asks (operator or node name).
    pub from: String,
    /// The node that must run it.
    pub to: String,
    /// The method (`exec`, `service.restart`, …).
    pub method: String,
    /// Its arguments.
    #[serde(default)]
    pub args: serde_json::Value,
    /// Opaque data (base64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// Where the reply goes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<ReplyTo>,
    /// The request this one answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_reply_to: Option<String>,
    /// Time limit of the method, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method_timeout_ms: Option<u64>,
    /// After this (hub-adjusted) time the request is dead, in ms since the epoch.
    pub expires_at_ms: u64,
    /// The operator a hub-signed request acts for (dashboard actions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_behalf_of: Option<String>,
    /// Run it as it arrives, outside the stream's order (Steward's `REQn…`; see
    /// [`crate::lane`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unordered: bool,
}

impl Request {
    /// A request with a fresh id and no extras.
    pub fn new(
        from: &str,
        to: &str,
        method: &str,
        args: serde_json::Value,
        expires_at_ms: u64,
    ) -> Self {
        Self {
            id: ulid::Ulid::new().to_string(),
            from: from.into(),
            to: to.into(),
            method: method.into(),
            args,
            data: None,
            reply: None,
            in_reply_to: None,
            method_timeout_ms: None,
            expires_at_ms,
            on_behalf_of: None,
            unordered: false,
        }
    }
}

/// A request with its authorization signature over the exact bytes of `body`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Authorized {
    /// Base64 of the request's JSON bytes.
    pub body: String,
    /// Who signed.
    pub signer: PublicKey,
    /// Base64 signature.
    pub sig: String,
}

/// A stream: one owner instance's numbered messages to one receiver.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(deny_unknown_fields)]
pub struct StreamId {
    /// The owner's key (the single writer that assigns `seq`).
    pub owner: PublicKey,
    /// The owner's instance (a new instance starts a new stream at 1).
    pub instance: String,
    /// The receiving node.
    pub receiver: String,
    /// Which of the owner's streams to the receiver ([`crate::lane`]).
    #[serde(default, skip_serializing_if = "Lane::is_ordered")]
    pub lane: Lane,
}

impl StreamId {
    /// `owner`'s stream from `instance` to `receiver` on `lane`.
    pub fn new(owner: PublicKey, instance: &str, receiver: &str, lane: Lane) -> Self {
        Self {
            owner,
            instance: instance.into(),
            receiver: receiver.into(),
            lane,
        }
    }

    /// The same owner and receiver, on `lane`.
    pub fn on(&self, lane: Lane) -> Self {
        Self {
            lane,
            ..self.clone()
        }
    }
}

/// What a sequenced record carries.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Content {
    /// An authorized request.
    Request {
        /// The request and its authorization.
        auth: Authorized,
    },
    /// `seq` will never come (expired or purged): the receiver moves past it.
    Skip {
        /// Why.
        reason: String,
    },
}

/// The record the stream owner signs.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Sequenced {
    /// The stream.
    pub stream: StreamId,
    /// Position in the stream; `None` for an unordered message (runs as it arrives).
    pub seq: Option<u64>,
    /// The content.
    pub content: Content,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    v: u32,
    owner: PublicKey,
    body: String,
    sig: String,
}

/// Why an envelope was refused. Nothing is executed for a refused envelope.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// Larger than [`MAX_ENVELOPE`].
    #[error("envelope of {0} bytes is larger than the limit")]
    TooLarge(usize),
    /// Not an envelope (syntax, encoding, unknown version or fields).
    #[error("malformed envelope: {0}")]
    Malformed(String),
    /// Signed by a key that owns no stream to this node.
    #[error("envelope sequenced by an unknown key {0}")]
    UnknownOwner(String),
    /// The sequencing signature does not verify: altered, reordered or forged.
    #[error("bad sequencing signature")]
    BadSequencingSignature,
    /// The record names another owner than the key that signed it.
    #[error("stream owner does not match the signer")]
    OwnerMismatch,
    /// The stream is addressed to another node.
    #[error("stream is for {0}, not this node")]
    WrongReceiver(String),
    /// The authorization signature does not verify: the request was altered or forged.
    #[error("bad authorization signature")]
    BadAuthorizationSignature,
    /// The authorizer is not trusted here (unknown or revoked key).
    #[error("request signed by an untrusted key {0}")]
    UntrustedSigner(String),
    /// The request names another node than the stream's receiver.
    #[error("request is for {0}, not this node")]
    Retargeted(String),
    /// Past its expiry.
    #[error("request {0} expired")]
    Expired(String),
    /// Something other than a control method on the priority lane.
    #[error("{0} is not a control method and may not travel on the priority lane")]
    NotControl(String),
}

fn b64(s: &str, what: &str) -> Result<Vec<u8>, EnvelopeError> {
    B64.decode(s)
        .map_err(|e| EnvelopeError::Malformed(format!("{what}: {e}")))
}

fn sig64(s: &str) -> Result<[u8; 64], EnvelopeError> {
    b64(s, "signature")?
        .try_into()
        .map_err(|_| EnvelopeError::Malformed("signature is not 64 bytes".into()))
}

/// Signs a request as its authorizer.
pub fn authorize(request: &Request, key: &KeyPair) -> Result<Authorized, EnvelopeError> {
    let bytes = serde_json::to_vec(request).map_err(|e| EnvelopeError::Malformed(e.to_string()))?;
    let sig = key.sign(AUTH_DOMAIN, &bytes);
    Ok(Authorized {
        body: B64.encode(&bytes),
        signer: key.public(),
        sig: B64.encode(sig),
    })
}

/// Checks an authorization on its own (a hub does, before it sequences what an operator
/// sends): the signature over the exact bytes, then the request itself. Returns the
/// request; whether its signer may ask for it is the caller's decision.
pub fn check_authorized(auth: &Authorized) -> Result<Request, EnvelopeError> {
    let bytes = b64(&auth.body, "request")?;
    if bytes.len() > MAX_ENVELOPE {
        return Err(EnvelopeError::TooLarge(bytes.len()));
    }
    if !verify(&auth.signer, AUTH_DOMAIN, &bytes, &sig64(&auth.sig)?) {
        return Err(EnvelopeError::BadAuthorizationSignature);
    }
    serde_json::from_slice(&bytes).map_err(|e| EnvelopeError::Malformed(e.to_string()))
}

/// The authorized request inside an envelope's bytes, without checking anything: only for
/// an envelope that [`open`] verified already (a hub forwarding a node's request to another
/// node keeps the original authorization, so the target judges the original signer).
pub fn authorization_of(bytes: &[u8]) -> Option<Authorized> {
    let wire: Wire = serde_json::from_slice(bytes).ok()?;
    let body = B64.decode(&wire.body).ok()?;
    match serde_json::from_slice::<Sequenced>(&body).ok()?.content {
        Content::Request { auth } => Some(auth),
        Content::Skip { .. } => None,
    }
}

/// Seals a record as the stream's owner: the envelope's bytes, ready to send.
pub fn seal(record: &Sequenced, owner: &KeyPair) -> Result<Vec<u8>, EnvelopeError> {
    if record.stream.owner != owner.public() {
        return Err(EnvelopeError::OwnerMismatch);
    }
    let body = serde_json::to_vec(record).map_err(|e| EnvelopeError::Malformed(e.to_string()))?;
    let sig = owner.sign(SEQ_DOMAIN, &body);
    serde_json::to_vec(&Wire {
        v: 1,
        owner: owner.public(),
        body: B64.encode(&body),
        sig: B64.encode(sig),
    })
    .map_err(|e| EnvelopeError::Malformed(e.to_string()))
}

/// Seals the request inside a stored envelope again, as `owner`, at position `seq` of
/// `stream`. For an owner that renews its streams (restored from a backup, or its key
/// rotated). The authorization signature is kept, unless `reauthorize(signer)` says the
/// owner signed it under a key it no longer uses: then the same request bytes are signed
/// again by `owner` (a rotated key's overlap may end before the message is delivered).
/// `None` for a skip marker or bytes that hold no request.
pub fn reseal(
    bytes: &[u8],
    stream: &StreamId,
    seq: u64,
    owner: &KeyPair,
    reauthorize: &dyn Fn(&PublicKey) -> bool,
) -> Option<Vec<u8>> {
    let mut auth = authorization_of(bytes)?;
    if reauthorize(&auth.signer) {
        let body = B64.decode(&auth.body).ok()?;
        auth = Authorized {
            signer: owner.public(),
            sig: B64.encode(owner.sign(AUTH_DOMAIN, &body)),
            body: auth.body,
        };
    }
    let record = Sequenced {
        stream: stream.clone(),
        seq: Some(seq),
        content: Content::Request { auth },
    };
    seal(&record, owner).ok()
}

/// A verified envelope.
#[derive(Clone, Debug, PartialEq)]
pub struct Opened {
    /// The stream.
    pub stream: StreamId,
    /// Its position (`None`: unordered).
    pub seq: Option<u64>,
    /// What it carries.
    pub payload: Payload,
}

/// What a verified envelope carries.
#[derive(Clone, Debug, PartialEq)]
pub enum Payload {
    /// A request, and who authorized it (policy decides on this key).
    Request {
        /// The request.
        request: Box<Request>,
        /// Its authorizer.
        authorizer: PublicKey,
    },
    /// A skip marker.
    Skip {
        /// Why.
        reason: String,
    },
}

/// What the receiver trusts.
pub struct Trust<'a> {
    /// This node's name.
    pub me: &'a str,
    /// Keys allowed to own streams to this node (the hub's pinned key, peers' node keys).
    pub owners: &'a dyn Fn(&PublicKey) -> bool,
    /// Keys allowed to authorize requests at all (policy refines per method).
    pub signers: &'a dyn Fn(&PublicKey) -> bool,
    /// Hub-adjusted time now, ms since the epoch.
    pub now_ms: u64,
}

/// Verifies an envelope's bytes; see the module documentation for the checks.
pub fn open(bytes: &[u8], trust: &Trust<'_>) -> Result<Opened, EnvelopeError> {
    read(bytes, Some(trust))
}

/// Reads an envelope that [`open`] verified before it was stored, without checking its
/// signatures again (two signature checks are most of the cost of handling a message).
/// Only for bytes this process stored after verifying them, never for bytes from outside.
pub fn reopen(bytes: &[u8]) -> Result<Opened, EnvelopeError> {
    read(bytes, None)
}

/// [`open`] with `trust`, [`reopen`] without.
fn read(bytes: &[u8], trust: Option<&Trust<'_>>) -> Result<Opened, EnvelopeError> {
    if bytes.len() > MAX_ENVELOPE {
        return Err(EnvelopeError::TooLarge(bytes.len()));
    }
    let wire: Wire =
        serde_json::from_slice(bytes).map_err(|e| EnvelopeError::Malformed(e.to_string()))?;
    if wire.v != 1 {
        return Err(EnvelopeError::Malformed(format!(
            "unknown version {}",
            wire.v
        )));
    }
    let body = b64(&wire.body, "body")?;
    if let Some(trust) = trust {
        if !(trust.owners)(&wire.owner) {
            return Err(EnvelopeError::UnknownOwner(wire.owner.fingerprint()));
        }
        if !verify(&wire.owner, SEQ_DOMAIN, &body, &sig64(&wire.sig)?) {
            return Err(EnvelopeError::BadSequencingSignature);
        }
    }
    let record: Sequenced =
        serde_json::from_slice(&body).map_err(|e| EnvelopeError::Malformed(e.to_string()))?;
    if record.stream.owner != wire.owner {
        return Err(EnvelopeError::OwnerMismatch);
    }
    if let Some(trust) = trust
        && record.stream.receiver != trust.me
    {
        return Err(EnvelopeError::WrongReceiver(record.stream.receiver));
    }
    let payload = match record.content {
        Content::Skip { reason } => Payload::Skip { reason },
        Content::Request { auth } => {
            let req_bytes = b64(&auth.body, "request")?;
            let request: Option<Request> = serde_json::from_slice(&req_bytes).ok();
            if let Some(trust) = trust {
                // The owner's own request to this very receiver: the sequencing signature
                // (checked above, by the same key, over bytes that hold the request)
                // proves it already. A request to be forwarded keeps its own check: its
                // target judges the authorization signature alone.
                let covered =
                    auth.signer == wire.owner && request.as_ref().is_some_and(|r| r.to == trust.me);
                if !covered && !verify(&auth.signer, AUTH_DOMAIN, &req_bytes, &sig64(&auth.sig)?) {
                    return Err(EnvelopeError::BadAuthorizationSignature);
                }
                if !(trust.signers)(&auth.signer) {
                    return Err(EnvelopeError::UntrustedSigner(auth.signer.fingerprint()));
                }
            }
            let request: Request = match request {
                Some(r) => r,
                None => serde_json::from_slice(&req_bytes)
                    .map_err(|e| EnvelopeError::Malformed(e.to_string()))?,
            };
            if let Some(trust) = trust {
                // The hub relays node-to-node requests (it re-sequences them into the
                // target's stream, where the target checks `to` again); everyone else runs
                // only what is addressed to them.
                if request.to != trust.me && trust.me != HUB {
                    return Err(EnvelopeError::Retargeted(request.to));
                }
                if request.expires_at_ms <= trust.now_ms {
                    return Err(EnvelopeError::Expired(request.id));
                }
                if record.stream.lane == Lane::Priority && !is_control(&request.method) {
                    return Err(EnvelopeError::NotControl(request.method));
                }
            }
            Payload::Request {
                request: Box::new(request),
                authorizer: auth.signer,
            }
        }
    };
    Ok(Opened {
        stream: record.stream,
        seq: record.seq,
        payload,
    })
}

#[cfg(test)]
mod tests;
