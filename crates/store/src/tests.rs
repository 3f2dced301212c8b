//! Unit tests of the store against real SQLite files.

use super::*;

fn ev(service: &str, kind: EventKind, ts_ms: u64) -> Event {
    Event {
        id: 0,
        ts_ms,
        service: Some(service.into()),
        kind,
        actor: "agent".into(),
        message: format!("{service} {kind}"),
        detail: serde_json::json!({"pid": 42}),
    }
}

#[test]
fn events_round_trip_and_filter() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("agent.db");
    let mut store = Store::open(&path)?;
    let mut evs = vec![
        ev("a", EventKind::Starting, 10),
        ev("b", EventKind::Running, 20),
        ev("a", EventKind::Exited, 30),
    ];
    store.append_events(&mut evs)?;
    assert!(evs[0].id < evs[1].id && evs[1].id < evs[2].id);
    drop(store);

    let store = Store::open(&path)?;
    let all = store.query_events(&EventQuery::default())?;
    assert_eq!(all, evs);
    let a = store.query_events(&EventQuery {
        service: Some("a".into()),
        ..Default::default()
    })?;
    assert_eq!(a.len(), 2);
    let recent = store.query_events(&EventQuery {
        since_ms: Some(20),
        ..Default::default()
    })?;
    assert_eq!(recent.len(), 2);
    let last = store.query_events(&EventQuery {
        limit: Some(1),
        ..Default::default()
    })?;
    assert_eq!(last, vec![evs[2].clone()]);
    let after = store.query_events(&EventQuery {
        after_id: Some(evs[1].id),
        ..Default::default()
    })?;
    assert_eq!(after, vec![evs[2].clone()]);
    let oldest = store.query_events(&EventQuery {
        after_id: Some(evs[0].id),
        limit: Some(1),
        oldest: true,
        ..Default::default()
    })?;
    assert_eq!(
        oldest,
        vec![evs[1].clone()],
        "the oldest after the cursor, no gap"
    );
    Ok(())
}

#[test]
fn prune_by_age_and_count() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let mut store = Store::open(&dir.path().join("agent.db"))?;
    let mut evs: Vec<Event> = (0..10).map(|i| ev("a", EventKind::Running, i)).collect();
    store.append_events(&mut evs)?;
    assert_eq!(store.prune_events(3, 100)?, 3);
    assert_eq!(store.prune_events(0, 4)?, 3);
    let left = store.query_events(&EventQuery::default())?;
    assert_eq!(
        left.iter().map(|e| e.ts_ms).collect::<Vec<_>>(),
        vec![6, 7, 8, 9]
    );
    Ok(())
}

#[test]
fn service_records_and_buddy_positions() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let mut store = Store::open(&dir.path().join("agent.db"))?;
    let rec = ServiceRecord {
        name: "web".into(),
        desired: Desired::Running,
        buddy: Some(BuddyIdentity {
            pid: 7,
            start_ticks: 99,
            boot_id: "b".into(),
        }),
        journal_seq: 0,
        service_pid: Some(9),
    };
    store.put_service(&rec)?;
    let mut evs = vec![ev("web", EventKind::Exited, 1)];
    store.append_buddy_events("web", &mut evs, 12)?;
    // An older position never moves it back.
    store.append_buddy_events("web", &mut [], 5)?;
    let got = store.service("web")?.ok_or("missing")?;
    assert_eq!(got.journal_seq, 12);
    assert_eq!(got.buddy, rec.buddy);
    let mut e = ev("web", EventKind::Action, 2);
    store.set_desired("web", Desired::Stopped, &mut e)?;
    assert_eq!(store.services()?[0].desired, Desired::Stopped);
    assert!(e.id > 0);
    store.delete_service("web")?;
    assert!(store.service("web")?.is_none());
    Ok(())
}

#[test]
fn a_schema_of_a_newer_epoch_is_refused() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("agent.db");
    {
        let c = Connection::open(&path)?;
        c.pragma_update(None, "user_version", 1001)?;
    }
    match Store::open(&path) {
        Err(StoreError::TooNew { found: 1001, .. }) => Ok(()),
        other => Err(format!("expected TooNew, got {:?}", other.err()).into()),
    }
}

#[test]
fn an_older_agent_opens_a_store_a_newer_one_migrated_additively()
-> std::result::Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("agent.db");
    drop(Store::open(&path)?);
    {
        // What a newer agent's additive migration leaves: one more table, a higher version.
        let c = Connection::open(&path)?;
        let v: i64 = c.pragma_query_value(None, "user_version", |r| r.get(0))?;
        c.execute_batch("CREATE TABLE from_the_future (x INTEGER);")?;
        c.pragma_update(None, "user_version", v + 1)?;
    }
    let store = Store::open(&path)?;
    assert!(store.services()?.is_empty());
    let c = Connection::open(&path)?;
    let v: i64 = c.pragma_query_value(None, "user_version", |r| r.get(0))?;
    assert!(v > 1, "the newer version is kept ({v})");
    Ok(())
}

#[test]
fn batch_is_all_or_nothing() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let mut store = Store::open(&dir.path().join("agent.db"))?;
    let rec = ServiceRecord {
        name: "a".into(),
        desired: Desired::Running,
        buddy: None,
        journal_seq: 0,
        service_pid: Some(9),
    };
    let mut ok = vec![
        Write::PutService(rec.clone()),
        Write::BuddyEvents {
            service: "a".into(),
            events: vec![ev("a", EventKind::Running, 1)],
            journal_seq: 4,
        },
        Write::Events(vec![ev("b", EventKind::Stopped, 2)]),
    ];
    store.apply(&mut ok)?;
    assert!(ok[1].events()[0].id > 0 && ok[2].events()[0].id > ok[1].events()[0].id);
    assert_eq!(store.service("a")?.map(|r| r.journal_seq), Some(4));
    // A failing write (desired violates the CHECK constraint? no: an invalid kind is
    // impossible) — use a SQL-level failure: a put after the table is gone.
    store
        .conn
        .execute_batch("ALTER TABLE services RENAME TO gone")?;
    let mut bad = vec![
        Write::Events(vec![ev("c", EventKind::Running, 3)]),
        Write::PutService(rec),
    ];
    assert!(store.apply(&mut bad).is_err());
    store
        .conn
        .execute_batch("ALTER TABLE gone RENAME TO services")?;
    let all = store.query_events(&EventQuery::default())?;
    assert_eq!(all.len(), 2, "the failed batch stored nothing");
    Ok(())
}

#[test]
fn module_records() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let mut store = Store::open(&dir.path().join("agent.db"))?;
    let put = |v: &str, r: &str| Write::PutModule {
        name: "m".into(),
        version: v.into(),
        record: r.into(),
    };
    store.apply(&mut [put("1.0.0", "{\"a\":1}"), put("2.0.0", "{}")])?;
    store.apply(&mut [put("1.0.0", "{\"a\":2}")])?;
    assert_eq!(
        store.modules()?,
        vec!["{\"a\":2}".to_string(), "{}".to_string()]
    );
    store.apply(&mut [Write::DeleteModule {
        name: "m".into(),
        version: "1.0.0".into(),
    }])?;
    assert_eq!(store.modules()?.len(), 1);
    Ok(())
}

#[test]
fn named_records() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let mut store = Store::open(&dir.path().join("agent.db"))?;
    assert_eq!(store.kv("apply")?, None);
    store.apply(&mut [Write::PutKv {
        key: "apply".into(),
        value: "1".into(),
    }])?;
    store.apply(&mut [Write::PutKv {
        key: "apply".into(),
        value: "2".into(),
    }])?;
    assert_eq!(store.kv("apply")?.as_deref(), Some("2"));
    store.apply(&mut [Write::DeleteKv("apply".into())])?;
    assert_eq!(store.kv("apply")?, None);
    Ok(())
}
