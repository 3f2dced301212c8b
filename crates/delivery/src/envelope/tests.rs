//! Security tests of the envelope: forged, altered, retargeted, re-sequenced, expired,
//! untrusted and malformed envelopes are refused with the right reason.

use super::*;
use crate::keys::KeyPair;

struct World {
    hub: KeyPair,
    operator: KeyPair,
    stranger: KeyPair,
}

fn world() -> World {
    World {
        hub: KeyPair::generate().expect("key"),
        operator: KeyPair::generate().expect("key"),
        stranger: KeyPair::generate().expect("key"),
    }
}

fn stream(w: &World, to: &str) -> StreamId {
    StreamId {
        owner: w.hub.public(),
        instance: "hub-1".into(),
        receiver: to.into(),
        lane: Default::default(),
    }
}

fn sealed(w: &World, to: &str, seq: u64, req: &Request) -> Vec<u8> {
    let auth = authorize(req, &w.operator).expect("authorize");
    seal(
        &Sequenced {
            stream: stream(w, to),
            seq: Some(seq),
            content: Content::Request { auth },
        },
        &w.hub,
    )
    .expect("seal")
}

fn open_as(w: &World, me: &str, bytes: &[u8], now: u64) -> Result<Opened, EnvelopeError> {
    let hub = w.hub.public();
    let op = w.operator.public();
    let owners = move |k: &PublicKey| *k == hub;
    let signers = move |k: &PublicKey| *k == op;
    open(
        bytes,
        &Trust {
            me,
            owners: &owners,
            signers: &signers,
            now_ms: now,
        },
    )
}

fn req(to: &str) -> Request {
    Request::new(
        "alice",
        to,
        "exec",
        serde_json::json!({"argv": ["true"]}),
        10_000,
    )
}

#[test]
fn a_good_envelope_opens() {
    let w = world();
    let r = req("n1");
    let opened = open_as(&w, "n1", &sealed(&w, "n1", 7, &r), 5_000).expect("open");
    assert_eq!(opened.seq, Some(7));
    assert_eq!(
        opened.payload,
        Payload::Request {
            request: Box::new(r),
            authorizer: w.operator.public()
        }
    );
}

#[test]
fn a_stored_envelope_reopens_as_it_opened() {
    let w = world();
    let bytes = sealed(&w, "n1", 3, &req("n1"));
    let opened = open_as(&w, "n1", &bytes, 5_000).expect("open");
    // Later (past its expiry, trust no longer at hand): read back the same.
    assert_eq!(reopen(&bytes).expect("reopen"), opened);
    assert!(matches!(reopen(b"{"), Err(EnvelopeError::Malformed(_))));
}

#[test]
fn altered_bytes_are_refused() {
    let w = world();
    let bytes = sealed(&w, "n1", 1, &req("n1"));
    let mut wire: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
    // Change the sequenced body (e.g. a relay rewriting seq): the outer signature fails.
    let body = B64
        .decode(wire["body"].as_str().expect("body"))
        .expect("b64");
    let text = String::from_utf8(body)
        .expect("utf8")
        .replace("\"seq\":1", "\"seq\":2");
    wire["body"] = serde_json::Value::String(B64.encode(text));
    let bytes = serde_json::to_vec(&wire).expect("json");
    assert_eq!(
        open_as(&w, "n1", &bytes, 0),
        Err(EnvelopeError::BadSequencingSignature)
    );
}

#[test]
fn a_relay_cannot_re_sequence_or_alter_the_request() {
    let w = world();
    // The relay (stranger) takes a genuine authorized request and seals it under its own
    // key at another seq: its key owns no stream here.
    let auth = authorize(&req("n1"), &w.operator).expect("authorize");
    let forged = seal(
        &Sequenced {
            stream: StreamId {
                owner: w.stranger.public(),
                instance: "x".into(),
                receiver: "n1".into(),
                lane: Default::default(),
            },
            seq: Some(1),
            content: Content::Request { auth: auth.clone() },
        },
        &w.stranger,
    )
    .expect("seal");
    assert!(matches!(
        open_as(&w, "n1", &forged, 0),
        Err(EnvelopeError::UnknownOwner(_))
    ));
    // The hub (a legitimate owner) cannot alter what the operator authorized.
    let mut tampered = auth;
    let body = B64.decode(&tampered.body).expect("b64");
    let text = String::from_utf8(body)
        .expect("utf8")
        .replace("true", "reboot");
    tampered.body = B64.encode(text);
    let bytes = seal(
        &Sequenced {
            stream: stream(&w, "n1"),
            seq: Some(1),
            content: Content::Request { auth: tampered },
        },
        &w.hub,
    )
    .expect("seal");
    assert_eq!(
        open_as(&w, "n1", &bytes, 0),
        Err(EnvelopeError::BadAuthorizationSignature)
    );
}

#[test]
fn retargeting_is_refused() {
    let w = world();
    // Sent to n2, delivered to n1.
    let bytes = sealed(&w, "n2", 1, &req("n2"));
    assert_eq!(
        open_as(&w, "n1", &bytes, 0),
        Err(EnvelopeError::WrongReceiver("n2".into()))
    );
    // A request for n2 put by the owner into n1's stream.
    let bytes = sealed(&w, "n1", 1, &req("n2"));
    assert_eq!(
        open_as(&w, "n1", &bytes, 0),
        Err(EnvelopeError::Retargeted("n2".into()))
    );
}

#[test]
fn untrusted_signers_expiry_and_garbage() {
    let w = world();
    let auth = authorize(&req("n1"), &w.stranger).expect("authorize");
    let bytes = seal(
        &Sequenced {
            stream: stream(&w, "n1"),
            seq: Some(1),
            content: Content::Request { auth },
        },
        &w.hub,
    )
    .expect("seal");
    assert!(matches!(
        open_as(&w, "n1", &bytes, 0),
        Err(EnvelopeError::UntrustedSigner(_))
    ));
    let bytes = sealed(&w, "n1", 1, &req("n1"));
    assert!(matches!(
        open_as(&w, "n1", &bytes, 10_000),
        Err(EnvelopeError::Expired(_))
    ));
    assert!(matches!(
        open_as(&w, "n1", b"not json", 0),
        Err(EnvelopeError::Malformed(_))
    ));
    let big = vec![b' '; MAX_ENVELOPE + 1];
    assert_eq!(
        open_as(&w, "n1", &big, 0),
        Err(EnvelopeError::TooLarge(MAX_ENVELOPE + 1))
    );
    // A signature made for authorization never passes as a sequencing signature.
    let r = serde_json::to_vec(&req("n1")).expect("json");
    let cross = w.hub.sign(AUTH_DOMAIN, &r);
    let wire = serde_json::json!({"v": 1, "owner": w.hub.public(), "body": B64.encode(&r), "sig": B64.encode(cross)});
    assert_eq!(
        open_as(&w, "n1", &serde_json::to_vec(&wire).expect("json"), 0),
        Err(EnvelopeError::BadSequencingSignature)
    );
}

#[test]
fn skip_markers_are_signed_by_the_owner() {
    let w = world();
    let bytes = seal(
        &Sequenced {
            stream: stream(&w, "n1"),
            seq: Some(3),
            content: Content::Skip {
                reason: "expired".into(),
            },
        },
        &w.hub,
    )
    .expect("seal");
    let opened = open_as(&w, "n1", &bytes, 0).expect("open");
    assert_eq!(
        opened.payload,
        Payload::Skip {
            reason: "expired".into()
        }
    );
    // Only the owner can seal for its stream.
    let err = seal(
        &Sequenced {
            stream: stream(&w, "n1"),
            seq: Some(4),
            content: Content::Skip { reason: "x".into() },
        },
        &w.stranger,
    );
    assert_eq!(err, Err(EnvelopeError::OwnerMismatch));
}

#[test]
fn the_priority_lane_carries_only_control_methods() {
    let w = world();
    let on_priority = |r: &Request| {
        let auth = authorize(r, &w.operator).expect("authorize");
        seal(
            &Sequenced {
                stream: stream(&w, "n1").on(Lane::Priority),
                seq: Some(1),
                content: Content::Request { auth },
            },
            &w.hub,
        )
        .expect("seal")
    };
    // `exec` smuggled onto the priority lane (past every backlog) is refused...
    assert!(matches!(
        open_as(&w, "n1", &on_priority(&req("n1")), 0),
        Err(EnvelopeError::NotControl(m)) if m == "exec"
    ));
    // ...a status query is what it is for, and the lane survives the round trip.
    let mut ps = req("n1");
    ps.method = "ops.ps".into();
    let opened = open_as(&w, "n1", &on_priority(&ps), 0).expect("open");
    assert_eq!(opened.stream.lane, Lane::Priority);
}

#[test]
fn a_resealed_envelope_keeps_or_renews_its_authorization() {
    let w = world();
    let bytes = sealed(&w, "n1", 3, &req("n1"));
    let next = KeyPair::generate().expect("key");
    let renewed = StreamId {
        owner: next.public(),
        ..stream(&w, "n1")
    };
    let open_with = |bytes: &[u8], signer: PublicKey| {
        let owner = next.public();
        let owners = move |k: &PublicKey| *k == owner;
        let signers = move |k: &PublicKey| *k == signer;
        open(
            bytes,
            &Trust {
                me: "n1",
                owners: &owners,
                signers: &signers,
                now_ms: 1,
            },
        )
    };
    // Kept: the operator's signature over the same request, under the new owner.
    let kept = reseal(&bytes, &renewed, 1, &next, &|_| false).expect("reseal");
    let o = open_with(&kept, w.operator.public()).expect("opens");
    assert_eq!((o.stream.owner, o.seq), (next.public(), Some(1)));
    // Renewed: the same request, now authorized by the new key.
    let again = reseal(&bytes, &renewed, 1, &next, &|k| *k == w.operator.public()).expect("reseal");
    let o = open_with(&again, next.public()).expect("opens");
    match (
        o.payload,
        open_as(&w, "n1", &bytes, 1).expect("original").payload,
    ) {
        (
            Payload::Request {
                request: a,
                authorizer,
            },
            Payload::Request { request: b, .. },
        ) => {
            assert_eq!(a, b, "the request is unchanged");
            assert_eq!(authorizer, next.public());
        }
        other => panic!("{other:?}"),
    }
    // A skip marker has nothing to reseal.
    let skip = seal(
        &Sequenced {
            stream: stream(&w, "n1"),
            seq: Some(4),
            content: Content::Skip {
                reason: "expired".into(),
            },
        },
        &w.hub,
    )
    .expect("seal");
    assert!(reseal(&skip, &renewed, 2, &next, &|_| true).is_none());
}

#[test]
fn an_owners_own_request_is_covered_by_its_sequencing_signature_unless_forwarded() {
    let node = KeyPair::generate().expect("key");
    let node_pub = node.public();
    let sealed_by_node = |to: &str, garble: bool| {
        let mut auth = authorize(
            &Request::new("n1", to, "console", serde_json::json!({}), 10),
            &node,
        )
        .expect("authorize");
        if garble {
            auth.sig = B64.encode([7u8; 64]);
        }
        seal(
            &Sequenced {
                stream: StreamId::new(node.public(), "n1-i", HUB, Default::default()),
                seq: Some(1),
                content: Content::Request { auth },
            },
            &node,
        )
        .expect("seal")
    };
    let at_hub = |bytes: &[u8]| {
        let keys = move |k: &PublicKey| *k == node_pub;
        open(
            bytes,
            &Trust {
                me: HUB,
                owners: &keys,
                signers: &keys,
                now_ms: 1,
            },
        )
    };
    // To the hub itself: the node's sequencing signature over the request is enough (and
    // a bad authorization signature inside changes nothing the hub relies on).
    assert!(at_hub(&sealed_by_node(HUB, false)).is_ok());
    assert!(at_hub(&sealed_by_node(HUB, true)).is_ok());
    // To be forwarded to another node: its target judges the authorization alone, so the
    // hub checks it too.
    assert!(at_hub(&sealed_by_node("n2", false)).is_ok());
    assert_eq!(
        at_hub(&sealed_by_node("n2", true)),
        Err(EnvelopeError::BadAuthorizationSignature)
    );
}
