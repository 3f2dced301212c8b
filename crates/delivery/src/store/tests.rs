//! The outbox and inbox against a reference model, with crashes (close and reopen of both
//! files) injected between steps, lost and duplicated transmissions, skips and purges.

use super::*;
use crate::keys::KeyPair;
use proptest::prelude::*;

fn stream(owner: &KeyPair) -> StreamId {
    StreamId {
        owner: owner.public(),
        instance: "i1".into(),
        receiver: "n1".into(),
        lane: Default::default(),
    }
}

#[derive(Clone, Debug)]
enum Step {
    /// The owner accepts a new message (or, if `skip`, a skip marker for its position).
    Send { skip: bool },
    /// The owner transmits its unacked window; each envelope is delivered or lost, and
    /// delivered ones may arrive twice and in reverse order.
    Transmit {
        lose: Vec<bool>,
        dup: bool,
        reverse: bool,
    },
    /// Both processes crash and restart.
    Crash,
    /// The owner purges one accepted message (picked by index): if it is still in the
    /// outbox it becomes a skip, and is never stored unless the receiver had it already.
    Purge { pick: usize },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => Just(Step::Send { skip: false }),
        1 => Just(Step::Send { skip: true }),
        3 => (proptest::collection::vec(any::<bool>(), 0..8), any::<bool>(), any::<bool>())
            .prop_map(|(lose, dup, reverse)| Step::Transmit { lose, dup, reverse }),
        1 => Just(Step::Crash),
        1 => any::<usize>().prop_map(|pick| Step::Purge { pick }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn nothing_lost_nothing_twice_in_order(steps in proptest::collection::vec(step(), 1..40)) {
        let dir = tempfile::tempdir().expect("tempdir");
        let (out_path, in_path) = (dir.path().join("owner.db"), dir.path().join("node.db"));
        let owner = KeyPair::generate().expect("key");
        let s = stream(&owner);
        let mut outbox = DeliveryStore::open(&out_path).expect("open");
        let mut inbox = DeliveryStore::open(&in_path).expect("open");
        // Reference model: what was accepted, in order (id or skip; a purge the receiver did
        // not have yet turns its id into a skip).
        let mut accepted: Vec<Option<String>> = Vec::new();
        // Envelope bytes here are "id" or "skip" (signatures are tested in envelope.rs).
        for st in steps.iter().cloned().chain(std::iter::once(Step::Transmit { lose: vec![], dup: false, reverse: false })) {
            match st {
                Step::Send { skip } => {
                    let id = if skip { None } else { Some(format!("m{}", accepted.len() + 1)) };
                    let body = id.clone().unwrap_or_else(|| "skip".into());
                    let seq = outbox.enqueue(&s, &body, u64::MAX, |_| body.clone().into_bytes()).expect("enqueue");
                    prop_assert_eq!(seq as usize, accepted.len() + 1);
                    accepted.push(id);
                }
                Step::Transmit { lose, dup, reverse } => {
                    let mut window = outbox.unacked(&s, 64).expect("unacked");
                    if reverse { window.reverse(); }
                    let mut acked = None;
                    for (i, (seq, env)) in window.iter().enumerate() {
                        if lose.get(i).copied().unwrap_or(false) { continue; }
                        let text = String::from_utf8(env.clone()).expect("utf8");
                        let id = (text != "skip").then_some(text.as_str());
                        for _ in 0..if dup { 2 } else { 1 } {
                            let r = inbox.receive(&Arrival { stream: &s, seq: Some(*seq), id, envelope: env }).expect("receive");
                            acked = Some(r.acked);
                        }
                    }
                    if let Some(a) = acked {
                        outbox.ack(&s, a).expect("ack");
                    }
                }
                Step::Purge { pick } => {
                    if accepted.is_empty() { continue; }
                    let k = pick % accepted.len();
                    let Some(id) = accepted[k].clone() else { continue };
                    // Waiting: still in the outbox as itself (a purge already put a skip
                    // marker in its place: purging it again finds nothing).
                    let waiting = outbox.unacked(&s, 1000).expect("unacked").iter().any(|(seq, env)| *seq as usize == k + 1 && env.as_slice() != b"skip");
                    let gone = outbox.purge(std::slice::from_ref(&id), 7, |_, _| b"skip".to_vec()).expect("purge");
                    prop_assert_eq!(gone.len(), usize::from(waiting), "purged exactly when still waiting");
                    // Stored means in the inbox or held there behind a gap.
                    let held: i64 = inbox.conn.query_row("SELECT count(*) FROM in_held WHERE id = ?1", params![id], |r| r.get(0)).expect("held");
                    let stored = held > 0 || inbox.inbox_ids(&s).expect("ids").iter().any(|(_, i)| *i == id);
                    if waiting && !stored {
                        accepted[k] = None;
                    }
                }
                Step::Crash => {
                    drop(outbox);
                    drop(inbox);
                    outbox = DeliveryStore::open(&out_path).expect("reopen");
                    inbox = DeliveryStore::open(&in_path).expect("reopen");
                }
            }
        }
        // Drain: transmit until everything is acknowledged (bounded).
        for _ in 0..accepted.len() + 2 {
            let window = outbox.unacked(&s, 64).expect("unacked");
            if window.is_empty() { break; }
            let mut acked = 0;
            for (seq, env) in &window {
                let text = String::from_utf8(env.clone()).expect("utf8");
                let id = (text != "skip").then_some(text.as_str());
                acked = inbox.receive(&Arrival { stream: &s, seq: Some(*seq), id, envelope: env }).expect("receive").acked;
            }
            outbox.ack(&s, acked).expect("ack");
        }
        prop_assert!(outbox.unacked(&s, 64).expect("unacked").is_empty(), "everything delivered");
        let got: Vec<String> = inbox.inbox_ids(&s).expect("ids").into_iter().map(|(_, id)| id).collect();
        let want: Vec<String> = accepted.into_iter().flatten().collect();
        prop_assert_eq!(got, want, "each accepted message stored once, in order; skips stored as nothing");
    }
}

#[test]
fn each_lane_is_its_own_stream_with_its_own_key() {
    let owner = KeyPair::generate().expect("key");
    let s = stream(&owner);
    let keys: Vec<String> = Lane::ALL.iter().map(|l| stream_key(&s.on(*l))).collect();
    // The ordered lane keeps the key streams had before lanes existed.
    assert!(keys.contains(&format!(
        "{}/{}/{}",
        owner.public().to_base64(),
        s.instance,
        s.receiver
    )));
    for (lane, key) in Lane::ALL.iter().zip(&keys) {
        assert_eq!(parse_stream_key(key), Some(s.on(*lane)), "{key}");
    }
    assert_eq!(
        keys.iter().collect::<std::collections::BTreeSet<_>>().len(),
        3
    );
    // Positions on one lane say nothing about another's.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut inbox = DeliveryStore::open(&dir.path().join("n.db")).expect("open");
    for (lane, id) in [(Lane::Ordered, "o1"), (Lane::Priority, "p1")] {
        let r = inbox
            .receive(&Arrival {
                stream: &s.on(lane),
                seq: Some(1),
                id: Some(id),
                envelope: b"x",
            })
            .expect("receive");
        assert_eq!((r.acked, r.released.len()), (1, 1), "{lane:?}");
    }
}

#[test]
fn unordered_messages_are_deduplicated_by_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let owner = KeyPair::generate().expect("key");
    let s = stream(&owner);
    let mut inbox = DeliveryStore::open(&dir.path().join("n.db")).expect("open");
    let a = Arrival {
        stream: &s,
        seq: None,
        id: Some("u1"),
        envelope: b"x",
    };
    let r1 = inbox.receive(&a).expect("receive");
    let r2 = inbox.receive(&a).expect("receive");
    assert_eq!(r1.released.len(), 1);
    assert!(r2.duplicate && r2.released.is_empty());
}

#[test]
fn expiry_dead_letters_and_a_skip_lets_the_stream_move_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let owner = KeyPair::generate().expect("key");
    let s = stream(&owner);
    let mut outbox = DeliveryStore::open(&dir.path().join("o.db")).expect("open");
    let mut inbox = DeliveryStore::open(&dir.path().join("n.db")).expect("open");
    outbox
        .enqueue(&s, "m1", 100, |_| b"m1".to_vec())
        .expect("enqueue");
    outbox
        .enqueue(&s, "m2", 10_000, |_| b"m2".to_vec())
        .expect("enqueue");
    // Nothing expires early.
    assert!(
        outbox
            .expire(99, |_, _| b"skip".to_vec())
            .expect("expire")
            .is_empty()
    );
    let dead = outbox.expire(100, |_, _| b"skip".to_vec()).expect("expire");
    assert_eq!(dead.len(), 1);
    assert_eq!((dead[0].seq, dead[0].id.as_str()), (1, "m1"));
    assert_eq!(outbox.dead_letters().expect("dead").len(), 1);
    // A second pass does not dead-letter the skip marker itself.
    assert!(
        outbox
            .expire(5_000, |_, _| b"skip".to_vec())
            .expect("expire")
            .is_empty()
    );
    // The receiver gets the skip at 1 and m2 at 2.
    let mut acked = 0;
    for (seq, env) in outbox.unacked(&s, 10).expect("unacked") {
        let id = (env != b"skip").then(|| String::from_utf8(env.clone()).expect("utf8"));
        acked = inbox
            .receive(&Arrival {
                stream: &s,
                seq: Some(seq),
                id: id.as_deref(),
                envelope: &env,
            })
            .expect("receive")
            .acked;
    }
    assert_eq!(acked, 2);
    let ids: Vec<String> = inbox
        .inbox_ids(&s)
        .expect("ids")
        .into_iter()
        .map(|(_, i)| i)
        .collect();
    assert_eq!(ids, vec!["m2"]);
}

#[test]
fn a_retired_stream_dead_letters_what_waits_and_starts_again_at_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let owner = KeyPair::generate().expect("key");
    let s = stream(&owner);
    let mut out = DeliveryStore::open(&dir.path().join("o.db")).expect("open");
    for id in ["a", "b", "c"] {
        out.enqueue(&s, id, u64::MAX, |_| id.as_bytes().to_vec())
            .expect("enqueue");
    }
    out.ack(&s, 1).expect("ack");
    let gone = out.retire_stream(&s, 5).expect("retire");
    let ids: Vec<&str> = gone.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["b", "c"], "only what was still waiting");
    assert!(out.unacked(&s, 10).expect("unacked").is_empty());
    assert_eq!(out.dead_letters().expect("dead").len(), 2);
    let seq = out
        .enqueue(&s, "d", u64::MAX, |_| b"d".to_vec())
        .expect("enqueue");
    assert_eq!(seq, 1, "a new receiver under the same name starts at 1");
    // Retired again: its dead letters take positions earlier ones held, and all stay.
    out.enqueue(&s, "e", u64::MAX, |_| b"e".to_vec())
        .expect("enqueue");
    out.retire_stream(&s, 6).expect("retire");
    let dead: Vec<String> = out
        .dead_letters()
        .expect("dead")
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(dead, ["b", "c", "d", "e"]);
}

#[test]
fn a_store_from_before_keeps_its_dead_letters_and_gets_the_new_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("old.db");
    {
        let c = Connection::open(&path).expect("open");
        c.execute_batch(
            "CREATE TABLE dead_letters (
                key TEXT NOT NULL, seq INTEGER NOT NULL, id TEXT NOT NULL, envelope BLOB NOT NULL,
                expired_at_ms INTEGER NOT NULL, PRIMARY KEY (key, seq));
             INSERT INTO dead_letters VALUES ('k', 1, 'x', X'00', 5);",
        )
        .expect("old schema");
    }
    let s = DeliveryStore::open(&path).expect("open");
    let dead = s.dead_letters().expect("dead");
    assert_eq!(dead.len(), 1);
    s.conn
        .execute(
            "INSERT INTO dead_letters VALUES ('k', 1, 'y', X'00', 6)",
            [],
        )
        .expect("same position, another message");
    drop(s);
    assert_eq!(
        DeliveryStore::open(&path)
            .expect("reopen")
            .dead_letters()
            .expect("dead")
            .len(),
        2
    );
}

#[test]
fn a_fence_keeps_its_boot_and_an_old_inbox_gains_the_column() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("old.db");
    {
        // An inbox from before fences kept their boot, with one request fenced already.
        let c = Connection::open(&path).expect("open");
        c.execute_batch(
            "CREATE TABLE inbox (
                id TEXT PRIMARY KEY, key TEXT NOT NULL, seq INTEGER, envelope BLOB NOT NULL,
                state TEXT NOT NULL DEFAULT 'ready');
             INSERT INTO inbox VALUES ('old', 'k', 1, X'00', 'running');
             INSERT INTO inbox VALUES ('new', 'k', 2, X'00', 'ready');",
        )
        .expect("old schema");
    }
    let mut s = DeliveryStore::open(&path).expect("open");
    assert_eq!(
        s.fence_boot("old").expect("read"),
        None,
        "not recorded: another boot"
    );
    assert!(
        !s.fence("old", Some("b1")).expect("fence"),
        "fenced already"
    );
    assert_eq!(s.fence_boot("old").expect("read"), None);
    assert!(s.fence("new", Some("b1")).expect("fence"));
    assert!(!s.fence("new", Some("b2")).expect("fence"), "only once");
    drop(s);
    let s = DeliveryStore::open(&path).expect("reopen");
    assert_eq!(s.fence_boot("new").expect("read").as_deref(), Some("b1"));
    assert_eq!(s.fence_boot("absent").expect("read"), None);
}
