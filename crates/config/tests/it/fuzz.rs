//! Random and mutated input never panics (a small deterministic fuzzer, no proptest).

use reeve_config::{parse_duration, parse_service, parse_signal, parse_size, start_order};
use std::path::Path;

/// xorshift64*: deterministic, good enough to shake the parser.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n.max(1) as u64).unwrap_or(0)
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len())]
    }
}

const SEED_TOML: &str = include_str!("../../src/service/tests.rs");

const KEYS: &[&str] = &[
    "command",
    "args",
    "cwd",
    "working_dir",
    "env",
    "inherit_env",
    "user",
    "group",
    "provides",
    "requires",
    "priority",
    "initial_state",
    "ExecStart",
    "KillTimeout",
    "UserRateLimit",
    "MaxConsecutiveFailures",
    "CustomActions",
    "SetUID",
    "restart.policy",
    "restart.backoff_initial",
    "restart.backoff_max",
    "restart.jitter",
    "restart.backoff_multiplier",
    "restart.max_restarts",
    "stop.signal",
    "stop.kill_timeout",
    "reload.signal",
    "reload.command",
    "actions.x.signal",
    "actions.x.command",
    "health.kind",
    "health.url",
    "health.address",
    "health.interval",
    "health.timeout",
    "health.within",
    "health.max",
    "health.path",
    "health.threshold",
    "log.max_size",
    "log.keep",
    "log.pipe",
    "limits.nofile",
    "limits.as",
    "limits.bogus",
];

const VALUES: &[&str] = &[
    "1",
    "-1",
    "0",
    "9223372036854775807",
    "-9223372036854775808",
    "1.5",
    "-0.0",
    "nan",
    "inf",
    "-inf",
    "1e308",
    "\"\"",
    "\"x\"",
    "\"30s\"",
    "\"99999999999999999999h\"",
    "\"10MiB\"",
    "\"18446744073709551615T\"",
    "\"unlimited\"",
    "\"SIGTERM\"",
    "\"http://a:1/\"",
    "\"[::1]:1\"",
    "\"/abs\"",
    "\"exec\"",
    "\"http\"",
    "\"tcp\"",
    "\"max_uptime\"",
    "\"file_modified_within\"",
    "[]",
    "[\"a\"]",
    "[\"\"]",
    "[1]",
    "{}",
    "{ soft = 1, hard = 0 }",
    "{ soft = \"unlimited\" }",
    "true",
    "\"\\u0000\"",
    "\"é/ü\"",
    "1979-05-27",
];

fn check(name: &str, file: &str, text: &str) {
    let _ = parse_service(name, Path::new(file), text);
}

#[test]
fn random_bytes() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..3000 {
        let len = rng.below(200);
        let bytes: Vec<u8> = (0..len).map(|_| (rng.next() & 0xff) as u8).collect();
        let text = String::from_utf8_lossy(&bytes);
        check("x", "/s/x.toml", &text);
        check("x", "/s/x.json", &text);
        let _ = parse_signal(&text);
        let _ = parse_size(&text);
        let _ = parse_duration(&text);
        let _ = reeve_config::validate_name(&text);
    }
}

#[test]
fn generated_key_values() {
    let mut rng = Rng(42);
    let mut parsed = Vec::new();
    for i in 0..5000 {
        let mut text = String::new();
        for _ in 0..rng.below(8) {
            text.push_str(&format!("{} = {}\n", rng.pick(KEYS), rng.pick(VALUES)));
        }
        if rng.below(2) == 0 {
            text.insert_str(0, "command = [\"a\"]\n");
        }
        let name = format!("s{}", i % 17);
        if let Ok(d) = parse_service(&name, Path::new("/s/x.toml"), &text) {
            let _ = d.buddy_spec(Path::new("/l"), &[("A".into(), "B".into())]);
            parsed.push(d);
        }
        let json_like = text.replace(" = ", "\": ").replace('\n', ",\n\"");
        check("x", "/s/x.json", &format!("{{\"{json_like}\"}}"));
    }
    assert!(!parsed.is_empty());
    let _ = start_order(&parsed);
}

#[test]
fn mutated_valid_files() {
    let mut rng = Rng(7);
    let base = SEED_TOML.as_bytes();
    for _ in 0..3000 {
        let start = rng.below(base.len());
        let mut piece: Vec<u8> = base[start..(start + rng.below(600)).min(base.len())].to_vec();
        for _ in 0..rng.below(5) {
            if piece.is_empty() {
                break;
            }
            let at = rng.below(piece.len());
            match rng.below(3) {
                0 => piece[at] = (rng.next() & 0xff) as u8,
                1 => {
                    piece.remove(at);
                }
                _ => piece
                    .splice(at..at, rng.pick(VALUES).bytes())
                    .for_each(drop),
            }
        }
        let text = String::from_utf8_lossy(&piece);
        check("web", "/s/web.toml", &text);
        check("web", "/s/web.json", &text);
    }
}

#[test]
fn random_dependency_graphs() {
    let mut rng = Rng(99);
    for _ in 0..200 {
        let n = 1 + rng.below(12);
        let services: Vec<_> = (0..n)
            .map(|i| {
                let reqs: Vec<String> =
                    (0..rng.below(3)).map(|_| format!("\"s{}\"", rng.below(n + 2))).collect();
                let provides = format!("\"p{}\"", rng.below(4));
                crate::svc(
                    &format!("s{i}"),
                    &format!(
                        "command = [\"a\"]\nrequires = [{}]\nprovides = [{provides}]\npriority = {}",
                        reqs.join(","),
                        rng.below(3)
                    ),
                )
            })
            .collect();
        if let Ok(order) = start_order(&services) {
            assert_eq!(order.len(), n);
            // Every service comes after what it requires.
            for (pos, name) in order.iter().enumerate() {
                let s = services
                    .iter()
                    .find(|s| &s.name == name)
                    .unwrap_or_else(|| panic!("{name}"));
                for r in &s.requires {
                    assert!(order[..pos].contains(r), "{name} before {r}: {order:?}");
                }
            }
        }
    }
}
