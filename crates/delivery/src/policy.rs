//! The node's local policy (DESIGN.md §2.2): which signers may call which method. It is a
//! local file only; nothing remote can change it or re-enable a handler.
//!
//! ```toml
//! [keys]                     # named keys (operators, peers); the hub is "hub"
//! alice = "BASE64-PUBLIC-KEY"
//! bob = ["NEW-KEY", "OLD-KEY"] # while a key is rotated: either signs as bob
//! hub = "BASE64-PUBLIC-KEY"
//!
//! [roles]
//! admins = ["alice"]
//!
//! [methods]                  # who may call what: key names, "role:NAME", "hub"
//! "exec" = ["role:admins"]
//! "service.*" = ["hub", "alice"]
//!
//! [revoked]                  # refused for everything, whatever the rest says
//! keys = ["BASE64-PUBLIC-KEY"]
//! ```
//!
//! A method the file does not name falls back to the defaults: `exec`, `exec.stream`,
//! `tail` and `http.get` are **off** (nobody); service control and lifecycle, modules,
//! desired state, the agent's self-update and the read-only queries are open to the hub and
//! every named key.

use crate::keys::PublicKey;
use serde::Deserialize;
use std::collections::BTreeMap;

/// Methods nobody may call unless the policy names them.
pub const OFF_BY_DEFAULT: &[&str] = &["exec", "exec.stream", "tail", "http.get"];

/// Methods the hub and named keys may call unless the policy says otherwise.
pub const OPEN_BY_DEFAULT: &[&str] = &[
    "service.*",
    "module.*",
    "state.apply",
    "apply.cancel",
    "agent.update",
    "events.query",
    "logs.query",
    "ops.ps",
    "hello",
];

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    keys: BTreeMap<String, KeyList>,
    #[serde(default)]
    roles: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    methods: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    revoked: RawRevoked,
}

/// One key, or several (the overlap of a key rotation).
#[derive(Deserialize)]
#[serde(untagged)]
enum KeyList {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRevoked {
    #[serde(default)]
    keys: Vec<String>,
}

/// Why a policy file was refused (every problem at once).
#[derive(Debug, thiserror::Error)]
#[error("invalid policy: {}", .0.join("; "))]
pub struct PolicyError(pub Vec<String>);

/// The decision for one call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Allowed, because of this rule.
    Allow(String),
    /// Refused, with the reason (for the error reply and the audit event).
    Refuse(String),
}

/// A checked policy.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    keys: BTreeMap<String, Vec<PublicKey>>,
    roles: BTreeMap<String, Vec<String>>,
    methods: BTreeMap<String, Vec<String>>,
    revoked: Vec<PublicKey>,
}

impl Policy {
    /// Parses and checks a policy file's text.
    pub fn parse(text: &str) -> Result<Self, PolicyError> {
        let raw: Raw = toml::from_str(text).map_err(|e| PolicyError(vec![e.to_string()]))?;
        let mut errors = Vec::new();
        let mut keys = BTreeMap::new();
        for (name, list) in raw.keys {
            let list = match list {
                KeyList::One(k) => vec![k],
                KeyList::Many(ks) => ks,
            };
            if list.is_empty() {
                errors.push(format!("keys.{name}: no key"));
            }
            let mut parsed = Vec::new();
            for k in list {
                match PublicKey::from_base64(&k) {
                    Ok(p) => parsed.push(p),
                    Err(e) => errors.push(format!("keys.{name}: {e}")),
                }
            }
            keys.insert(name, parsed);
        }
        for (role, members) in &raw.roles {
            for m in members {
                if !keys.contains_key(m) {
                    errors.push(format!("roles.{role}: unknown key name {m:?}"));
                }
            }
        }
        for (method, who) in &raw.methods {
            for w in who {
                let ok = match w.strip_prefix("role:") {
                    Some(r) => raw.roles.contains_key(r),
                    None => keys.contains_key(w),
                };
                if !ok {
                    errors.push(format!("methods.{method:?}: unknown signer {w:?}"));
                }
            }
        }
        let mut revoked = Vec::new();
        for k in raw.revoked.keys {
            match PublicKey::from_base64(&k) {
                Ok(p) => revoked.push(p),
                Err(e) => errors.push(format!("revoked.keys: {e}")),
            }
        }
        if !errors.is_empty() {
            return Err(PolicyError(errors));
        }
        Ok(Self {
            keys,
            roles: raw.roles,
            methods: raw.methods,
            revoked,
        })
    }

    /// Names `key` (the agent names its pinned hub key "hub"); an existing name is kept.
    pub fn with_key(mut self, name: &str, key: PublicKey) -> Self {
        self.keys
            .entry(name.to_string())
            .or_insert_with(|| vec![key]);
        self
    }

    /// Names `keys` (the agent's pinned hub key and, during a hub key rotation, the previous
    /// one, as "hub"); an existing name is kept.
    pub fn with_keys(mut self, name: &str, keys: Vec<PublicKey>) -> Self {
        self.keys.entry(name.to_string()).or_insert(keys);
        self
    }

    /// Does the policy name `key` (and not revoke it)? Only such keys may sign requests.
    pub fn knows(&self, key: &PublicKey) -> bool {
        !self.revoked.contains(key) && self.name_of(key).is_some()
    }

    /// The name the policy gives `key`.
    pub fn name_of(&self, key: &PublicKey) -> Option<&str> {
        self.keys
            .iter()
            .find(|(_, ks)| ks.contains(key))
            .map(|(n, _)| n.as_str())
    }

    /// The rule that governs `method`: an exact entry, else the longest `prefix.*` entry.
    fn rule(&self, method: &str) -> Option<(&str, &Vec<String>)> {
        if let Some((m, w)) = self.methods.get_key_value(method) {
            return Some((m.as_str(), w));
        }
        self.methods
            .iter()
            .filter(|(m, _)| m.strip_suffix('*').is_some_and(|p| method.starts_with(p)))
            .max_by_key(|(m, _)| m.len())
            .map(|(m, w)| (m.as_str(), w))
    }

    /// May `signer` call `method`?
    pub fn decide(&self, method: &str, signer: &PublicKey) -> Decision {
        if self.revoked.contains(signer) {
            return Decision::Refuse(format!("key {} is revoked", signer.fingerprint()));
        }
        let Some(name) = self.name_of(signer) else {
            return Decision::Refuse(format!(
                "key {} is not named in the policy",
                signer.fingerprint()
            ));
        };
        if let Some((rule, who)) = self.rule(method) {
            let allowed = who.iter().any(|w| match w.strip_prefix("role:") {
                Some(r) => self
                    .roles
                    .get(r)
                    .is_some_and(|m| m.iter().any(|m| m == name)),
                None => w == name,
            });
            return if allowed {
                Decision::Allow(format!("methods.{rule:?} names {name}"))
            } else {
                Decision::Refuse(format!("methods.{rule:?} does not name {name}"))
            };
        }
        if OFF_BY_DEFAULT.contains(&method) {
            return Decision::Refuse(format!(
                "{method} is off unless the local policy names who may call it"
            ));
        }
        let open = OPEN_BY_DEFAULT.iter().any(|m| match m.strip_suffix('*') {
            Some(p) => method.starts_with(p),
            None => *m == method,
        });
        if open {
            Decision::Allow(format!("{method} is open to named keys by default"))
        } else {
            Decision::Refuse(format!("{method} is not allowed by the local policy"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::KeyPair;

    #[test]
    fn a_name_may_hold_several_keys_while_one_is_rotated() {
        let (new, old, other) = (
            KeyPair::generate().expect("k"),
            KeyPair::generate().expect("k"),
            KeyPair::generate().expect("k"),
        );
        let text = format!(
            "[keys]\nalice = [\"{}\", \"{}\"]\n[methods]\n\"exec\" = [\"alice\"]\n",
            new.public().to_base64(),
            old.public().to_base64()
        );
        let p = Policy::parse(&text).expect("policy");
        for k in [&new, &old] {
            assert_eq!(p.name_of(&k.public()), Some("alice"));
            assert!(matches!(p.decide("exec", &k.public()), Decision::Allow(_)));
        }
        assert!(!p.knows(&other.public()));
        // An empty list and a bad entry are errors, like a bad single key.
        let bad = Policy::parse("[keys]\nalice = []\nbob = [\"nope\"]\n").expect_err("bad");
        assert_eq!(bad.0.len(), 2, "{bad}");
    }

    #[test]
    fn defaults_rules_roles_and_revocation() {
        let (hub, alice, bob, eve) = (
            KeyPair::generate().expect("k"),
            KeyPair::generate().expect("k"),
            KeyPair::generate().expect("k"),
            KeyPair::generate().expect("k"),
        );
        let text = format!(
            "[keys]\nhub = \"{}\"\nalice = \"{}\"\nbob = \"{}\"\n[roles]\nadmins = [\"alice\"]\n[methods]\n\"exec\" = [\"role:admins\"]\n\"service.restart\" = [\"alice\"]\n[revoked]\nkeys = [\"{}\"]\n",
            hub.public().to_base64(),
            alice.public().to_base64(),
            bob.public().to_base64(),
            bob.public().to_base64()
        );
        let p = Policy::parse(&text).expect("policy");
        let allow = |m: &str, k: &KeyPair| matches!(p.decide(m, &k.public()), Decision::Allow(_));
        assert!(allow("exec", &alice), "a role named for exec");
        assert!(!allow("exec", &hub), "the hub may never exec unless named");
        assert!(!allow("tail", &alice), "tail is off by default");
        assert!(
            allow("service.stop", &hub),
            "service control is open to the hub by default"
        );
        assert!(
            !allow("service.restart", &hub),
            "an explicit rule replaces the default"
        );
        assert!(allow("service.restart", &alice));
        assert!(
            !allow("service.stop", &bob),
            "revoked keys are refused everything"
        );
        assert!(!allow("service.stop", &eve), "unnamed keys are refused");
        assert!(!allow("frobnicate", &alice), "unknown methods are refused");
        match p.decide("exec", &hub.public()) {
            Decision::Refuse(why) => assert!(why.contains("does not name hub"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_problem_is_reported() {
        let err = Policy::parse(
            "[keys]\nx = \"nope\"\n[roles]\nr = [\"ghost\"]\n[methods]\n\"exec\" = [\"role:none\", \"who\"]\n",
        )
        .expect_err("refused");
        assert_eq!(err.0.len(), 4, "{err}");
        assert!(Policy::parse("[unknown]\n").is_err());
    }
}
