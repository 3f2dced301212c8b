//! A hub-owned stream to a node over a link that loses, duplicates and reorders frames,
//! with both ends crashing (stores reopened) now and then: every accepted request is stored
//! at the node once, in order; everything is acknowledged in the end; forged frames are
//! refused and never acknowledged.

use super::*;
use crate::envelope::{Content, Request, Sequenced, authorize, seal};
use crate::keys::{KeyPair, PublicKey};
use crate::store::DeliveryStore;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[tokio::test]
async fn exactly_once_in_order_over_a_bad_link_with_crashes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (hub_db, node_db) = (dir.path().join("hub.db"), dir.path().join("node.db"));
    let hub = KeyPair::generate().expect("key");
    let operator = KeyPair::generate().expect("key");
    let stream = StreamId {
        owner: hub.public(),
        instance: "hub-1".into(),
        receiver: "n1".into(),
        lane: Default::default(),
    };
    let (hub_pub, op_pub) = (hub.public(), operator.public());
    let owners = move |k: &PublicKey| *k == hub_pub;
    let signers = move |k: &PublicKey| *k == op_pub;
    let mut hub_w = Writer::open(&hub_db).expect("open");
    let mut node_w = Writer::open(&node_db).expect("open");
    let mut out = Outgoing::new(stream.clone(), hub_w.clone(), 8, 10);
    let mut accepted = Vec::new();
    let mut rng = 0x9e3779b97f4a7c15u64;
    let mut now = 0u64;
    for round in 0..300 {
        now += 5;
        // The operator sends now and then (accepted = durable in the hub's outbox).
        if round < 200 && xorshift(&mut rng).is_multiple_of(3) {
            let req = Request::new(
                "alice",
                "n1",
                "service.restart",
                serde_json::json!({"name": "web"}),
                u64::MAX,
            );
            let auth = authorize(&req, &operator).expect("authorize");
            let s = stream.clone();
            let hub_key = KeyPair::from_secret_base64(&hub.secret_base64()).expect("key");
            hub_w
                .enqueue(stream.clone(), req.id.clone(), u64::MAX, move |seq| {
                    seal(
                        &Sequenced {
                            stream: s,
                            seq: Some(seq),
                            content: Content::Request { auth },
                        },
                        &hub_key,
                    )
                    .expect("seal")
                })
                .await
                .expect("enqueue");
            accepted.push(req.id);
        }
        // A crash of either side: reopen its store (what was committed survives).
        if xorshift(&mut rng).is_multiple_of(40) {
            drop(out);
            hub_w = Writer::open(&hub_db).expect("reopen");
            out = Outgoing::new(stream.clone(), hub_w.clone(), 8, 10);
        }
        if xorshift(&mut rng).is_multiple_of(40) {
            node_w = Writer::open(&node_db).expect("reopen");
        }
        // Transmit over the bad link.
        let mut frames = out.poll(now).await.expect("poll");
        if xorshift(&mut rng).is_multiple_of(2) {
            frames.reverse();
        }
        let trust = Trust {
            me: "n1",
            owners: &owners,
            signers: &signers,
            now_ms: now,
        };
        let mut acks = Vec::new();
        for f in frames {
            if xorshift(&mut rng).is_multiple_of(4) {
                continue; // lost
            }
            let Frame::Envelope { bytes } = f else {
                continue;
            };
            let copies = if xorshift(&mut rng).is_multiple_of(5) {
                2
            } else {
                1
            };
            for _ in 0..copies {
                if let Received::Stored { ack, .. } =
                    receive(&bytes, &trust, &node_w).await.expect("receive")
                {
                    acks.push(ack);
                }
            }
        }
        for a in acks {
            if xorshift(&mut rng).is_multiple_of(4) {
                continue; // ack lost
            }
            if let Frame::Ack { stream, upto } = a {
                out.on_ack(&stream, upto).await.expect("ack");
            }
        }
    }
    // Quiet link: everything drains.
    for _ in 0..100 {
        now += 1000;
        let unacked = DeliveryStore::open(&hub_db)
            .expect("peek")
            .unacked(&stream, 64)
            .expect("unacked");
        if unacked.is_empty() {
            break;
        }
        let trust = Trust {
            me: "n1",
            owners: &owners,
            signers: &signers,
            now_ms: now,
        };
        for f in out.poll(now).await.expect("poll") {
            if let Frame::Envelope { bytes } = f
                && let Received::Stored {
                    ack: Frame::Ack { stream, upto },
                    ..
                } = receive(&bytes, &trust, &node_w).await.expect("receive")
            {
                out.on_ack(&stream, upto).await.expect("ack");
            }
        }
    }
    assert!(
        DeliveryStore::open(&hub_db)
            .expect("peek")
            .unacked(&stream, 64)
            .expect("unacked")
            .is_empty()
    );
    let stored: Vec<String> = DeliveryStore::open(&node_db)
        .expect("peek")
        .inbox_ids(&stream)
        .expect("ids")
        .into_iter()
        .map(|(_, id)| id)
        .collect();
    assert!(!accepted.is_empty());
    assert_eq!(
        stored, accepted,
        "each request stored once, in the order accepted"
    );

    // A forged envelope is refused and acknowledges nothing.
    let stranger = KeyPair::generate().expect("key");
    let req = Request::new("eve", "n1", "exec", serde_json::json!({}), u64::MAX);
    let auth = authorize(&req, &stranger).expect("authorize");
    let forged = seal(
        &Sequenced {
            stream: stream.clone(),
            seq: Some(9999),
            content: Content::Request { auth },
        },
        &hub,
    )
    .expect("seal");
    let trust = Trust {
        me: "n1",
        owners: &owners,
        signers: &signers,
        now_ms: now,
    };
    assert!(matches!(
        receive(&forged, &trust, &node_w).await.expect("receive"),
        Received::Refused(_)
    ));
}

/// A lane with a window of its own keeps only that many in flight, while the other lanes
/// send theirs: a backlog there never queues ahead of what the other lanes carry.
#[tokio::test]
async fn a_lane_window_caps_only_its_lane() {
    let dir = tempfile::tempdir().expect("tempdir");
    let w = Writer::open(&dir.path().join("node.db")).expect("open");
    let node = Arc::new(KeyPair::generate().expect("key"));
    let stream = StreamId {
        owner: node.public(),
        instance: "n1-1".into(),
        receiver: "hub".into(),
        lane: Default::default(),
    };
    for lane in [Lane::Unordered, Lane::Ordered] {
        let s = stream.on(lane);
        for i in 0..10 {
            let mut req =
                Request::new("n1", "hub", "events", serde_json::json!({"i": i}), u64::MAX);
            req.unordered = lane == Lane::Unordered;
            let auth = authorize(&req, &node).expect("authorize");
            let (s2, k) = (s.clone(), node.clone());
            w.enqueue(s.clone(), req.id.clone(), u64::MAX, move |seq| {
                seal(
                    &Sequenced {
                        stream: s2,
                        seq: Some(seq),
                        content: Content::Request { auth },
                    },
                    &k,
                )
                .expect("seal")
            })
            .await
            .expect("enqueue");
        }
    }
    let mut out = Outgoing::new(stream.clone(), w.clone(), 256, 1_000).with_lane_window(
        Lane::Unordered,
        2,
        1_000,
    );
    let lanes = |frames: &[Frame]| {
        let (mut ordered, mut unordered) = (0, 0);
        for f in frames {
            let Frame::Envelope { bytes } = f else {
                continue;
            };
            let wire: serde_json::Value = serde_json::from_slice(bytes).expect("json");
            let body = B64
                .decode(wire["body"].as_str().expect("body"))
                .expect("b64");
            let record: Sequenced = serde_json::from_slice(&body).expect("record");
            match record.stream.lane {
                Lane::Unordered => unordered += 1,
                _ => ordered += 1,
            }
        }
        (ordered, unordered)
    };
    assert_eq!(lanes(&out.poll(0).await.expect("poll")), (10, 2));
    // Nothing more on that lane until an ack makes room; then exactly that much.
    assert_eq!(lanes(&out.poll(1).await.expect("poll")), (0, 0));
    out.on_ack(&stream.on(Lane::Unordered), 1)
        .await
        .expect("ack");
    assert_eq!(lanes(&out.poll(2).await.expect("poll")), (0, 1));
}
