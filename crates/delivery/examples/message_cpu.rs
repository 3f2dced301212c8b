//! Benchmark: the CPU one message costs on its way, without any IO — what an operator's
//! client, the hub and the node each compute for one 256-byte `exec` request, and so the
//! ceiling of messages per second per core whatever the disk and the network.
//!
//! `cargo run --release -p reeve-delivery --example message_cpu`
//!
//! Per message: the client authorizes (one signature); the hub checks that authorization
//! (one verification) and seals the envelope (one signature); the node opens it (the
//! sequencing and the authorization signatures: two verifications). Each figure is the
//! median of 5 runs of 2,000 operations.

use reeve_delivery::envelope::{
    Content, Request, Sequenced, StreamId, Trust, authorize, check_authorized, open, reopen, seal,
};
use reeve_delivery::keys::{KeyPair, PublicKey};
use std::time::Instant;

const N: usize = 2_000;

/// Median microseconds per call of `f` over 5 runs of `N` calls.
fn per_call(mut f: impl FnMut()) -> f64 {
    let mut runs: Vec<f64> = (0..5)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..N {
                f();
            }
            t.elapsed().as_secs_f64() * 1e6 / N as f64
        })
        .collect();
    runs.sort_by(f64::total_cmp);
    runs[2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (operator, hub) = (KeyPair::generate()?, KeyPair::generate()?);
    let mut request = Request::new(
        "alice",
        "n1",
        "exec",
        serde_json::json!({"argv": ["sh", "-c", "x".repeat(180)]}),
        u64::MAX >> 1,
    );
    request.id = "01JAAAAAAAAAAAAAAAAAAAAAAA".into();
    let stream = StreamId::new(hub.public(), "bench", "n1", Default::default());
    let auth = authorize(&request, &operator)?;
    let record = Sequenced {
        stream: stream.clone(),
        seq: Some(1),
        content: Content::Request { auth: auth.clone() },
    };
    let bytes = seal(&record, &hub)?;
    let (hub_pub, op_pub) = (hub.public(), operator.public());
    let owners = move |k: &PublicKey| *k == hub_pub;
    let signers = move |k: &PublicKey| *k == op_pub;
    let trust = Trust {
        me: "n1",
        owners: &owners,
        signers: &signers,
        now_ms: 1,
    };

    let client = per_call(|| {
        let _ = authorize(&request, &operator);
    });
    let hub_check = per_call(|| {
        let _ = check_authorized(&auth);
    });
    let hub_seal = per_call(|| {
        let _ = seal(&record, &hub);
    });
    let node_open = per_call(|| {
        let _ = open(&bytes, &trust);
    });
    let node_reopen = per_call(|| {
        let _ = reopen(&bytes);
    });
    // The node's reply, back at the hub: sequenced and authorized by the same key, to the
    // hub itself, so one verification covers both.
    let node = KeyPair::generate()?;
    let reply = Request::new(
        "n1",
        "hub",
        "console",
        serde_json::json!({"status": "ok"}),
        u64::MAX >> 1,
    );
    let reply_bytes = seal(
        &Sequenced {
            stream: StreamId::new(node.public(), "n1-i", "hub", Default::default()),
            seq: Some(1),
            content: Content::Request {
                auth: authorize(&reply, &node)?,
            },
        },
        &node,
    )?;
    let node_pub = node.public();
    let node_keys = move |k: &PublicKey| *k == node_pub;
    let at_hub = Trust {
        me: "hub",
        owners: &node_keys,
        signers: &node_keys,
        now_ms: 1,
    };
    let hub_reply = per_call(|| {
        let _ = open(&reply_bytes, &at_hub);
    });
    let signed = hub_check + hub_seal + node_open;
    println!("envelope: {} bytes on the wire", bytes.len());
    println!("client authorize (sign)        {client:7.1} µs");
    println!("hub check authorization        {hub_check:7.1} µs");
    println!("hub seal (sign)                {hub_seal:7.1} µs");
    println!("node open (2 verifications)    {node_open:7.1} µs");
    println!("node reopen (no verification)  {node_reopen:7.1} µs  (JSON and base64 alone)");
    println!("hub open of a reply (1 check)   {hub_reply:7.1} µs");
    println!(
        "hub + node, per request        {signed:7.1} µs  -> at most {:.0} messages/s per core",
        1e6 / signed
    );
    Ok(())
}
