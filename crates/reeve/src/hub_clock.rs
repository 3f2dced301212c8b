//! The hub's clock as `reeve send` last saw it. A request's expiry is judged on hub time
//! (DESIGN.md §2.1), so `reeve send` stamps it with the hub's clock, not the local one: a
//! laptop whose clock is off does no harm. Asking the hub costs a round trip per command,
//! so the offset between the two clocks is kept in `$XDG_CACHE_HOME/reeve/hub-clock.json`
//! (or `~/.cache/…`) and used while it is fresh. Every `POST /api/v1/messages` answer
//! carries the hub's time and refreshes it (rewritten when it is half as old as
//! [`FRESH_MS`] or the offset moved by a second or more).
//!
//! How far the cached offset can be wrong: by how much the local clock was stepped since
//! it was measured. A step backwards puts the measurement in the future and a step forward
//! of more than [`FRESH_MS`] makes it stale — both are refused — so the error stays under
//! [`FRESH_MS`] plus a round trip, small beside a TTL of days (the default is 30).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// How long a measured offset is used before the hub is asked again.
pub const FRESH_MS: i64 = 10 * 60 * 1000;

/// At most this many hubs are remembered (the least recently measured are dropped).
const MAX_HUBS: usize = 32;

#[derive(Serialize, Deserialize, Clone, Copy)]
struct Offset {
    /// Hub time minus local time, ms.
    offset_ms: i64,
    /// Local time of the measurement, ms since the epoch.
    at_ms: i64,
}

fn local_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn cache_file() -> Option<PathBuf> {
    let dir = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(dir.join("reeve").join("hub-clock.json"))
}

fn load(file: &Path) -> BTreeMap<String, Offset> {
    std::fs::read(file)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// The hub's time now, from a fresh cached offset for the hub at `url`; `None` when there
/// is none (ask the hub, then [`learn`]).
pub fn now(url: &str) -> Option<u64> {
    now_in(&cache_file()?, url)
}

/// Remembers that the hub at `url` said `hub_ms` just now. Best effort: a cache that
/// cannot be written only costs the next command a round trip.
pub fn learn(url: &str, hub_ms: u64) {
    if let Some(file) = cache_file() {
        learn_in(&file, url, hub_ms);
    }
}

fn now_in(file: &Path, url: &str) -> Option<u64> {
    let o = *load(file).get(url)?;
    let local = local_ms();
    let age = local - o.at_ms;
    ((0..=FRESH_MS).contains(&age)).then(|| (local + o.offset_ms).max(0) as u64)
}

fn learn_in(file: &Path, url: &str, hub_ms: u64) {
    let local = local_ms();
    let mut all = load(file);
    let offset_ms = hub_ms as i64 - local;
    // Nothing to write while the cached offset is young and still right to a second.
    if let Some(o) = all.get(url)
        && (0..FRESH_MS / 2).contains(&(local - o.at_ms))
        && (o.offset_ms - offset_ms).abs() < 1_000
    {
        return;
    }
    all.insert(
        url.to_string(),
        Offset {
            offset_ms,
            at_ms: local,
        },
    );
    while all.len() > MAX_HUBS {
        let oldest = all
            .iter()
            .min_by_key(|(_, o)| o.at_ms)
            .map(|(k, _)| k.clone());
        match oldest {
            Some(k) => all.remove(&k),
            None => break,
        };
    }
    let Ok(bytes) = serde_json::to_vec(&all) else {
        return;
    };
    let Some(dir) = file.parent() else { return };
    if std::fs::create_dir_all(dir).is_err() {
        return;
    }
    // Written aside and renamed: a concurrent `reeve send` reads the old or the new file.
    let tmp = dir.join(format!("hub-clock.json.{}", std::process::id()));
    if std::fs::write(&tmp, bytes).is_ok() && std::fs::rename(&tmp, file).is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_fresh_offsets_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("reeve").join("hub-clock.json");
        assert_eq!(now_in(&file, "https://h:1"), None, "nothing cached yet");
        // A hub an hour ahead.
        learn_in(&file, "https://h:1", (local_ms() + 3_600_000) as u64);
        let t = now_in(&file, "https://h:1").expect("cached") as i64;
        assert!(
            (t - local_ms() - 3_600_000).abs() < 1_000,
            "offset kept: {t}"
        );
        assert_eq!(now_in(&file, "https://other:1"), None, "per hub");
        // A measurement from the future (the local clock was stepped back) or older than
        // FRESH_MS is not used.
        for at in [local_ms() + 60_000, local_ms() - FRESH_MS - 1_000] {
            let mut all = load(&file);
            all.insert(
                "https://h:1".into(),
                Offset {
                    offset_ms: 0,
                    at_ms: at,
                },
            );
            std::fs::write(&file, serde_json::to_vec(&all).expect("json")).expect("write");
            assert_eq!(now_in(&file, "https://h:1"), None, "at {at}");
        }
        // A damaged file is ignored and replaced.
        std::fs::write(&file, b"{not json").expect("write");
        assert_eq!(now_in(&file, "https://h:1"), None);
        learn_in(&file, "https://h:1", local_ms() as u64);
        assert!(now_in(&file, "https://h:1").is_some());
    }

    #[test]
    fn a_young_unchanged_offset_is_not_rewritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("hub-clock.json");
        learn_in(&file, "https://h:1", local_ms() as u64);
        let at = load(&file)["https://h:1"].at_ms;
        std::thread::sleep(std::time::Duration::from_millis(5));
        learn_in(&file, "https://h:1", local_ms() as u64);
        assert_eq!(load(&file)["https://h:1"].at_ms, at, "kept as it was");
        // The hub's clock jumped by a minute: written again.
        learn_in(&file, "https://h:1", (local_ms() + 60_000) as u64);
        let o = load(&file)["https://h:1"];
        assert!((o.offset_ms - 60_000).abs() < 1_000, "{}", o.offset_ms);
    }

    #[test]
    fn keeps_a_bounded_number_of_hubs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("hub-clock.json");
        for i in 0..MAX_HUBS + 5 {
            learn_in(&file, &format!("https://h{i}:1"), local_ms() as u64);
        }
        assert_eq!(load(&file).len(), MAX_HUBS);
    }
}
