//! The API's handlers against a real hub store, through the router.

use super::*;
use axum::body::Body;
use tower::ServiceExt;

const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

struct Fixture {
    _dir: tempfile::TempDir,
    hub: Arc<Hub>,
    app: Router,
    token: String,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let hub = Hub::open(dir.path()).expect("hub");
    let token = crate::admin::add_operator(dir.path(), "alice", "viewer", None).expect("operator");
    let app = router(hub.clone(), true);
    Fixture {
        _dir: dir,
        hub,
        app,
        token,
    }
}

async fn call(
    app: &Router,
    method: &str,
    uri: &str,
    token: Option<&str>,
) -> (StatusCode, HeaderMap, serde_json::Value) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = app
        .clone()
        .oneshot(req.body(Body::empty()).expect("request"))
        .await
        .expect("answer");
    let (parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 24).await.expect("body");
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (parts.status, parts.headers, json)
}

/// The (method, path) pairs the document describes.
fn documented() -> Vec<(String, String)> {
    let doc = serde_json::to_value(crate::openapi::document()).expect("json");
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for m in item.as_object().expect("item").keys() {
            out.push((m.to_uppercase(), path.clone()));
        }
    }
    out
}

#[tokio::test]
async fn every_route_is_in_the_document_and_every_documented_route_answers() {
    let f = fixture();
    let doc = documented();
    assert!(doc.len() >= 14, "{doc:?}");
    for (m, p) in &doc {
        let uri = p.replace("{name}", "n1").replace("{id}", "x");
        let (status, ..) = call(&f.app, m, &uri, None).await;
        assert!(
            status != StatusCode::NOT_FOUND || p.contains('{'),
            "{m} {p} is documented but not routed"
        );
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{m} {p}");
        // Every other method on a documented path is absent from the router too.
        for other in METHODS {
            if !doc.iter().any(|(m2, p2)| m2 == other && p2 == p) {
                let (status, ..) = call(&f.app, other, &uri, None).await;
                assert_eq!(
                    status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{other} {p} is routed but not documented"
                );
            }
        }
    }
    // Routes added outside the documented list: only these, which are not the API.
    let src = include_str!("../api.rs");
    let extra: Vec<&str> = src
        .match_indices(concat!(".route", "(\""))
        .map(|(i, pat)| {
            let rest = &src[i + pat.len()..];
            &rest[..rest.find('"').expect("end of path")]
        })
        .collect();
    assert_eq!(
        extra,
        vec!["/relay"],
        "document these routes (routes!) or list them here"
    );
    assert!(
        doc.iter()
            .all(|(_, p)| p.starts_with("/api/v1/") || p == "/metrics")
    );
}

#[test]
fn the_document_has_the_bearer_scheme_and_public_routes_need_none() {
    let doc = serde_json::to_value(crate::openapi::document()).expect("json");
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert_eq!(doc["security"][0]["bearer"], serde_json::json!([]));
    for p in [
        "/api/v1/health",
        "/api/v1/join",
        "/api/v1/openapi.json",
        "/metrics",
    ] {
        let op = doc["paths"][p]
            .as_object()
            .and_then(|o| o.values().next())
            .expect(p);
        assert_eq!(op["security"], serde_json::json!([{}]), "{p}");
    }
    let served: serde_json::Value =
        serde_json::from_str(crate::openapi::json()).expect("served json");
    assert_eq!(served, doc);
}

#[tokio::test]
async fn me_nodes_filters_total_count_and_message_paging() {
    let f = fixture();
    let (status, _, body) = call(&f.app, "GET", "/api/v1/me", Some(&f.token)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, serde_json::json!({"name": "alice", "role": "viewer"}));
    let (status, ..) = call(&f.app, "GET", "/api/v1/me", Some("rvo_nope")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    f.hub
        .writer
        .run(|s| {
            let f = crate::db::fleet(s);
            for (i, n) in ["a_1", "ab", "b", "c"].iter().enumerate() {
                f.enrol_node(n, &format!("k{i}"), 1)?;
                for j in 0..3 {
                    let seq = (i * 10 + j) as u64;
                    f.insert_message(&db::NewMessage {
                        id: &format!("{n}-{j}"),
                        node: n,
                        lane: reeve_delivery::lane::Lane::Ordered,
                        seq: Some(seq),
                        method: "m",
                        sender: "alice",
                        from_node: false,
                        created_ms: seq,
                        expires_at_ms: 9,
                    })?;
                }
            }
            f.record_facts("b", "{\"os\":\"linux\"}", 42)?;
            Ok(())
        })
        .await
        .expect("rows");
    for name in ["ab", "c"] {
        f.hub.live.lock().expect("live").insert(
            name.into(),
            Arc::new(crate::Live {
                conn_id: 1,
                wake: Default::default(),
                probe: Default::default(),
                kick: Default::default(),
                removed: Default::default(),
                probe_nonce: 0.into(),
                pong_nonce: 0.into(),
            }),
        );
    }
    let names = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .expect("list")
            .iter()
            .map(|n| n["name"].as_str().expect("name").to_string())
            .collect()
    };
    let total = |h: &HeaderMap| -> u64 {
        h["x-total-count"]
            .to_str()
            .expect("ascii")
            .parse()
            .expect("number")
    };
    let t = Some(f.token.as_str());
    let (_, h, body) = call(&f.app, "GET", "/api/v1/nodes?limit=2", t).await;
    assert_eq!(
        (names(&body), total(&h)),
        (vec!["a_1".into(), "ab".into()], 4)
    );
    let (_, h, body) = call(&f.app, "GET", "/api/v1/nodes?online=true", t).await;
    assert_eq!(
        (names(&body), total(&h)),
        (vec!["ab".into(), "c".into()], 2)
    );
    assert_eq!(body[0]["online"], true);
    let (_, h, body) = call(&f.app, "GET", "/api/v1/nodes?online=false&offset=1", t).await;
    assert_eq!((names(&body), total(&h)), (vec!["b".into()], 2));
    assert_eq!(body[0]["facts"]["os"], "linux");
    assert_eq!(body[0]["facts_ms"], 42);
    // `_` is a literal in a search, not a wildcard.
    let (_, h, body) = call(&f.app, "GET", "/api/v1/nodes?search=_", t).await;
    assert_eq!((names(&body), total(&h)), (vec!["a_1".into()], 1));
    let (status, _, body) = call(&f.app, "GET", "/api/v1/nodes?online=maybe", t).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"].is_string(), "{body}");

    let ids = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .expect("list")
            .iter()
            .map(|m| m["id"].as_str().expect("id").to_string())
            .collect()
    };
    let (_, _, body) = call(&f.app, "GET", "/api/v1/messages?node=ab&limit=2", t).await;
    assert_eq!(ids(&body), vec!["ab-2", "ab-1"]);
    let (_, _, body) = call(&f.app, "GET", "/api/v1/messages?node=ab&offset=2", t).await;
    assert_eq!(ids(&body), vec!["ab-0"]);
    let (_, _, body) = call(&f.app, "GET", "/api/v1/messages?state=replied", t).await;
    assert_eq!(ids(&body), Vec::<String>::new());
    let (status, ..) = call(&f.app, "GET", "/api/v1/messages?state=lost", t).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_need_no_token() {
    let f = fixture();
    let t = Some(f.token.as_str());
    call(&f.app, "GET", "/api/v1/nodes/zz", t).await;
    call(&f.app, "GET", "/api/v1/nodes", None).await;
    let resp = f
        .app
        .clone()
        .oneshot(
            Request::builder()
                .uri("/metrics")
                .body(Body::empty())
                .expect("request"),
        )
        .await
        .expect("answer");
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("text/plain; version=0.0.4")
    );
    let text = String::from_utf8(
        axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .expect("body")
            .to_vec(),
    )
    .expect("utf-8");
    assert!(
        text.contains(
            "reeve_hub_api_requests_total{method=\"GET\",route=\"/api/v1/nodes/{name}\",status=\"404\"} 1"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "reeve_hub_api_requests_total{method=\"GET\",route=\"/api/v1/nodes\",status=\"401\"} 1"
        ),
        "{text}"
    );
    assert!(text.contains("reeve_hub_nodes_enrolled 0\n"), "{text}");
    assert!(
        text.contains("reeve_hub_messages{state=\"expired\"} 0\n"),
        "{text}"
    );
}

/// POSTs `body` as JSON to `uri`, with `token` as the bearer when given: status and text.
async fn post_body(
    app: Router,
    uri: String,
    token: Option<String>,
    body: Vec<u8>,
) -> (StatusCode, String) {
    let mut req = Request::builder()
        .method("POST")
        .uri(uri)
        .header("content-type", "application/json");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let req = req.body(Body::from(body)).expect("request");
    let resp = app.oneshot(req).await.expect("answer");
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .expect("body");
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

#[tokio::test]
async fn send_reads_large_bodies_of_operators_only() {
    let f = fixture();
    let op = crate::admin::add_operator(f._dir.path(), "ops", "operator", None).expect("op");
    let post = |token: &str, body: Vec<u8>| {
        post_body(
            f.app.clone(),
            "/api/v1/messages?wait=1".into(),
            Some(token.to_string()),
            body,
        )
    };
    // 10,000 requests of about 1.1 KiB (11 MiB): read whole and judged, not cut off at
    // the default 2 MiB.
    let one = serde_json::json!({"body": "A".repeat(1000), "signer": "B".repeat(44), "signature": "C".repeat(88)});
    let big =
        serde_json::to_vec(&serde_json::json!({"requests": vec![one; 10_000]})).expect("json");
    assert!(big.len() > 10 << 20);
    let (status, text) = post(&op, big.clone()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    assert!(text.contains("not a valid list of requests"), "{text}");
    // A viewer's body is not read at all.
    let (status, text) = post(&f.token, big).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{text}");
    // Past the limit: refused, the store unchanged.
    let (status, text) = post(&op, vec![b' '; SEND_BODY_LIMIT + 1]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    assert!(text.contains("at most 32 MiB"), "{text}");
    let counts = f.hub.read(|s| Ok(s.message_counts()?)).expect("counts");
    assert!(counts.is_empty(), "{counts:?}");
}

#[tokio::test]
async fn other_bodies_are_read_after_the_token_and_kept_small() {
    let f = fixture();
    let op = crate::admin::add_operator(f._dir.path(), "ops", "operator", None).expect("op");
    let post = |uri: &str, token: Option<&str>, body: Vec<u8>| {
        post_body(
            f.app.clone(),
            uri.to_string(),
            token.map(str::to_string),
            body,
        )
    };
    let big = vec![b' '; 3 << 20];
    // Without a token, or with a viewer's, the body is never judged.
    for uri in ["/api/v1/messages/purge", "/api/v1/nodes/n1/requests"] {
        let (status, text) = post(uri, None, big.clone()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri}: {text}");
        let (status, text) = post(uri, Some(&f.token), big.clone()).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{uri}: {text}");
    }
    // An operator's body past each route's limit is refused with the limit named.
    let (status, text) = post("/api/v1/messages/purge", Some(&op), big.clone()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    assert!(text.contains("at most 1 MiB"), "{text}");
    let (status, text) = post("/api/v1/nodes/n1/requests", Some(&op), vec![b' '; 65 << 10]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    assert!(text.contains("at most 64 KiB"), "{text}");
    let (status, text) = post("/api/v1/join", None, vec![b' '; 65 << 10]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    assert!(text.contains("at most 64 KiB"), "{text}");
    // Malformed JSON is named as such.
    let (status, text) = post("/api/v1/messages/purge", Some(&op), b"{".to_vec()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    assert!(text.contains("not a valid purge request"), "{text}");
    let counts = f.hub.read(|s| Ok(s.message_counts()?)).expect("counts");
    assert!(counts.is_empty(), "{counts:?}");
}

#[tokio::test]
async fn a_join_proves_the_token_without_its_secret_and_binds_name_and_key() {
    use reeve_delivery::join::joined_valid;
    use reeve_delivery::keys::KeyPair;
    let f = fixture();
    let token = crate::admin::create_token(f._dir.path(), "https://h:1", 60_000).expect("token");
    let node = KeyPair::generate().expect("key").public().to_base64();
    let thief = KeyPair::generate().expect("key").public().to_base64();
    let proof = token.prove("n1", &node).expect("proof");
    let body = |name: &str, key: &str| {
        serde_json::to_vec(&serde_json::json!({
            "node": name, "key": key, "token_key": proof.token_key, "proof": proof.proof,
        }))
        .expect("json")
    };
    let join = |b: Vec<u8>| post_body(f.app.clone(), "/api/v1/join".into(), None, b);
    // What a man in the middle saw, replayed with his key or another name: refused, and
    // the token is still good.
    for (name, key) in [("n1", thief.as_str()), ("n2", node.as_str())] {
        let (status, text) = join(body(name, key)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{text}");
        assert!(text.contains("proof does not match"), "{text}");
    }
    // The old form, with the secret in it: refused as malformed, nothing used.
    let old = serde_json::json!({"secret": token.secret, "node": "n1", "key": node});
    let (status, text) = join(serde_json::to_vec(&old).expect("json")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    // The node's own request: enrolled, with an answer signed by the hub.
    let (status, text) = join(body("n1", &node)).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let answer: serde_json::Value = serde_json::from_str(&text).expect("json");
    let time = answer["hub_time_ms"].as_u64().expect("hub time");
    let sig = answer["signature"].as_str().expect("signature");
    assert!(joined_valid(&f.hub.public_key(), "n1", &node, time, sig));
    assert!(!joined_valid(
        &f.hub.public_key(),
        "n1",
        &node,
        time + 1,
        sig
    ));
    let enrolled = f.hub.read(|s| Ok(s.node_key("n1")?)).expect("read");
    assert_eq!(enrolled.as_deref(), Some(node.as_str()));
    // Once only.
    let (status, text) = join(body("n1", &node)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{text}");
    assert!(text.contains("used already"), "{text}");
}
