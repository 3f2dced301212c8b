//! Planner tests: hand-written cases and a proptest model (every plan reaches the desired
//! state through legal steps in dependency order; every rollback gets back).

use proptest::prelude::*;
use serde_json::json;

use super::*;

fn r(s: &str) -> ModuleRef {
    s.parse().unwrap()
}

fn installed(s: &str, config: Option<Value>, running: bool, subs: &[&str]) -> InstalledModule {
    let m = r(s);
    InstalledModule {
        name: m.name,
        version: m.version,
        config,
        running,
        submodules: subs.iter().map(|s| r(s)).collect(),
    }
}

fn desired(s: &str, config: Value, running: bool) -> DesiredModule {
    let m = r(s);
    DesiredModule {
        name: m.name,
        version: m.version,
        config,
        running,
    }
}

fn words(steps: &[Step]) -> Vec<String> {
    steps
        .iter()
        .map(|s| format!("{} {}", s.kind(), s.module()))
        .collect()
}

#[test]
fn fresh_install() {
    let want = DesiredState {
        modules: vec![desired("my-server@1.0.0", json!({"port": 8989}), true)],
    };
    let steps = plan(&InstalledState::default(), &want, &Submodules::new()).unwrap();
    assert_eq!(
        words(&steps),
        [
            "download my-server@1.0.0",
            "install my-server@1.0.0",
            "configure my-server@1.0.0",
            "start my-server@1.0.0"
        ]
    );
    assert_eq!(
        steps[2],
        Step::Configure {
            module: r("my-server@1.0.0"),
            config: json!({"port": 8989})
        }
    );
}

#[test]
fn upgrade_stops_before_replacing_and_restarts_dependents() {
    let now = InstalledState {
        modules: vec![
            installed("db@1.0.0", Some(json!({})), true, &[]),
            installed("app@1.0.0", Some(json!({})), true, &["db@1.0.0"]),
            installed("old@1.0.0", Some(json!({})), true, &[]),
        ],
    };
    let want = DesiredState {
        modules: vec![
            desired("db@2.0.0", json!({}), true),
            desired("app@1.0.0", json!({}), true),
        ],
    };
    let steps = plan(&now, &want, &Submodules::new()).unwrap();
    assert_eq!(
        words(&steps),
        [
            "download db@2.0.0",
            "stop app@1.0.0",
            "stop old@1.0.0",
            "stop db@1.0.0",
            "uninstall old@1.0.0",
            "uninstall db@1.0.0",
            "install db@2.0.0",
            "configure db@2.0.0",
            "start db@2.0.0",
            "start app@1.0.0",
        ]
    );
}

#[test]
fn config_and_running_changes() {
    let now = InstalledState {
        modules: vec![
            installed("a@1.0.0", Some(json!({"x": 1})), true, &[]),
            installed("b@1.0.0", Some(json!({})), true, &[]),
            installed("c@1.0.0", Some(json!({})), false, &[]),
            installed("d@1.0.0", Some(json!({})), true, &[]),
        ],
    };
    let want = DesiredState {
        modules: vec![
            desired("a@1.0.0", json!({"x": 2}), true),
            desired("b@1.0.0", json!({}), false),
            desired("c@1.0.0", json!({}), true),
            desired("d@1.0.0", json!({}), true),
        ],
    };
    let steps = plan(&now, &want, &Submodules::new()).unwrap();
    assert_eq!(
        words(&steps),
        [
            "stop b@1.0.0",
            "stop a@1.0.0",
            "configure a@1.0.0",
            "start a@1.0.0",
            "start c@1.0.0"
        ]
    );
    // Nothing to do.
    let same = DesiredState {
        modules: vec![desired("d@1.0.0", json!(null), true)],
    };
    let only_d = InstalledState {
        modules: vec![now.modules[3].clone()],
    };
    assert!(plan(&only_d, &same, &Submodules::new()).unwrap().is_empty());
}

#[test]
fn new_modules_install_dependencies_first() {
    let mut known = Submodules::new();
    known.insert(r("app@1.0.0"), vec![r("db@1.0.0")]);
    let want = DesiredState {
        modules: vec![
            desired("app@1.0.0", json!({}), true),
            desired("db@1.0.0", json!({}), true),
        ],
    };
    let steps = plan(&InstalledState::default(), &want, &known).unwrap();
    assert_eq!(
        words(&steps),
        [
            "download db@1.0.0",
            "download app@1.0.0",
            "install db@1.0.0",
            "configure db@1.0.0",
            "install app@1.0.0",
            "configure app@1.0.0",
            "start db@1.0.0",
            "start app@1.0.0",
        ]
    );
    known.insert(r("db@1.0.0"), vec![r("app@1.0.0")]);
    assert!(matches!(
        plan(&InstalledState::default(), &want, &known),
        Err(PlanError::Cycle { .. })
    ));
}

#[test]
fn invalid_desired_states() {
    let want = DesiredState {
        modules: vec![
            desired("a@1.0.0", json!({}), true),
            desired("a@2.0.0", json!([]), true),
        ],
    };
    let Err(PlanError::Invalid { problems }) =
        plan(&InstalledState::default(), &want, &Submodules::new())
    else {
        panic!("accepted");
    };
    assert_eq!(problems.len(), 2, "{problems:?}");
}

#[test]
fn parse_toml_and_json() {
    let t = DesiredState::parse(
        "[[modules]]\nname = \"a\"\nversion = \"1.0.0\"\nconfig = { port = 1 }\n\n[[modules]]\nname = \"b\"\nversion = \"2.0.0\"\nrunning = false\n",
    )
    .unwrap();
    assert_eq!(t.modules.len(), 2);
    assert!(t.modules[0].running);
    assert_eq!(t.modules[0].config, json!({"port": 1}));
    assert!(!t.modules[1].running);
    let j = DesiredState::parse(r#"{"modules": [{"name": "a", "version": "1.0.0", "config": {"port": 1}}, {"name": "b", "version": "2.0.0", "running": false}]}"#).unwrap();
    assert_eq!(t, j);
    assert!(DesiredState::parse(r#"{"modules": [{"name": "a"}]}"#).is_err());
    assert!(DesiredState::parse(r#"{"modules": [{"name": "../a", "version": "1.0.0"}]}"#).is_err());
    assert!(DesiredState::parse("bogus = 1").is_err());
}

#[test]
fn rollback_after_a_failed_start() {
    let before = InstalledState {
        modules: vec![installed("a@1.0.0", Some(json!({"p": 1})), true, &[])],
    };
    let want = DesiredState {
        modules: vec![desired("a@2.0.0", json!({"p": 2}), true)],
    };
    let steps = plan(&before, &want, &Submodules::new()).unwrap();
    let failed = steps.iter().position(|s| s.kind() == "start").unwrap();
    let back = rollback(
        &before,
        &steps[..failed],
        Some(&steps[failed]),
        &Submodules::new(),
    )
    .unwrap();
    assert_eq!(
        words(&back),
        [
            "download a@1.0.0",
            "stop a@2.0.0",
            "uninstall a@2.0.0",
            "install a@1.0.0",
            "configure a@1.0.0",
            "start a@1.0.0"
        ]
    );
    assert_eq!(
        back[4],
        Step::Configure {
            module: r("a@1.0.0"),
            config: json!({"p": 1})
        }
    );
}

/// Applies steps with every precondition checked: what a strict executor would accept.
fn strict_apply(state: &mut InstalledState, step: &Step, known: &Submodules) -> Result<(), String> {
    let m = state.get(step.module()).cloned();
    let ok = match step {
        Step::Download { .. } => m.is_none(),
        Step::Install { .. } => m.is_none(),
        Step::Configure { .. } => m.as_ref().is_some_and(|m| !m.running),
        Step::Start { .. } => m.as_ref().is_some_and(|m| !m.running),
        Step::Stop { .. } => m.as_ref().is_some_and(|m| m.running),
        Step::Uninstall { .. } => m.as_ref().is_some_and(|m| !m.running),
    };
    if !ok {
        return Err(format!("illegal step {step} in {state:?}"));
    }
    apply_step(state, step, known);
    Ok(())
}

/// The comparable content of a state.
fn summary(s: &InstalledState) -> Vec<(String, String, Option<Value>, bool)> {
    let mut v: Vec<_> = s
        .modules
        .iter()
        .map(|m| {
            (
                m.name.clone(),
                m.version.to_string(),
                m.config.clone(),
                m.running,
            )
        })
        .collect();
    v.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    v
}

const NAMES: [&str; 4] = ["a", "b", "c", "d"];

/// Submodules by name: a module may depend on names before its own (so no circles).
fn deps_of(name: &str, version: u64, seed: u8) -> Vec<ModuleRef> {
    let i = NAMES.iter().position(|n| *n == name).unwrap_or(0);
    NAMES[..i]
        .iter()
        .enumerate()
        .filter(|(j, _)| (seed >> (*j as u64 + version)) & 1 == 1)
        .map(|(_, n)| r(&format!("{n}@1.0.0")))
        .collect()
}

fn arb_installed() -> impl Strategy<Value = InstalledState> {
    proptest::collection::vec(
        (
            1u64..=3,
            proptest::option::of(0u8..3),
            any::<bool>(),
            any::<bool>(),
        ),
        NAMES.len(),
    )
    .prop_flat_map(|v| (Just(v), any::<u8>()))
    .prop_map(|(v, seed)| InstalledState {
        modules: v
            .into_iter()
            .zip(NAMES)
            .filter(|((_, _, _, present), _)| *present)
            .map(|((ver, cfg, running, _), name)| InstalledModule {
                name: name.into(),
                version: Version::new(ver, 0, 0),
                config: cfg.map(|c| json!({ "v": c })),
                running: running && cfg.is_some(),
                submodules: deps_of(name, ver, seed),
            })
            .collect(),
    })
}

fn arb_desired() -> impl Strategy<Value = DesiredState> {
    proptest::collection::vec(
        (1u64..=3, 0u8..3, any::<bool>(), any::<bool>()),
        NAMES.len(),
    )
    .prop_map(|v| DesiredState {
        modules: v
            .into_iter()
            .zip(NAMES)
            .filter(|((_, _, _, present), _)| *present)
            .map(|((ver, cfg, running, _), name)| DesiredModule {
                name: name.into(),
                version: Version::new(ver, 0, 0),
                config: json!({ "v": cfg }),
                running,
            })
            .collect(),
    })
}

use semver::Version;

fn known_for(desired: &DesiredState, seed: u8) -> Submodules {
    desired
        .modules
        .iter()
        .map(|m| (m.module_ref(), deps_of(&m.name, m.version.major, seed)))
        .collect()
}

/// Index of the step `kind` of module `name`, if any.
fn at(steps: &[Step], kind: &str, name: &str) -> Option<usize> {
    steps
        .iter()
        .position(|s| s.kind() == kind && s.module().name == name)
}

proptest! {
    #[test]
    fn plans_reach_the_desired_state(before in arb_installed(), want in arb_desired(), seed in any::<u8>()) {
        let known = known_for(&want, seed);
        let steps = plan(&before, &want, &known).unwrap();
        let mut state = before.clone();
        for step in &steps {
            strict_apply(&mut state, step, &known).map_err(TestCaseError::fail)?;
        }
        let expected: Vec<_> = {
            let mut v: Vec<_> = want.modules.iter().map(|m| (m.name.clone(), m.version.to_string(), Some(m.config.clone()), m.running)).collect();
            v.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
            v
        };
        prop_assert_eq!(summary(&state), expected);
        // Downloads before anything changes.
        let first_change = steps.iter().position(|s| s.kind() != "download").unwrap_or(steps.len());
        prop_assert!(steps[first_change..].iter().all(|s| s.kind() != "download"));
        // Dependencies start first; dependents stop first.
        for m in &state.modules {
            for d in &m.submodules {
                if let (Some(i), Some(j)) = (at(&steps, "start", &m.name), at(&steps, "start", &d.name)) {
                    prop_assert!(j < i, "{} starts before its dependency {}: {:?}", m.name, d.name, steps);
                }
            }
        }
        for m in &before.modules {
            for d in &m.submodules {
                if let (Some(i), Some(j)) = (at(&steps, "stop", &m.name), at(&steps, "stop", &d.name)) {
                    prop_assert!(i < j, "{} stops after its dependency {}: {:?}", m.name, d.name, steps);
                }
            }
        }
        // Planning again from the result: nothing to do.
        prop_assert!(plan(&state, &want, &known).unwrap().is_empty());
    }

    #[test]
    fn rollbacks_get_back(before in arb_installed(), want in arb_desired(), seed in any::<u8>(), cut in any::<prop::sample::Index>()) {
        let known = known_for(&want, seed);
        let steps = plan(&before, &want, &known).unwrap();
        let k = cut.index(steps.len() + 1);
        let failed = steps.get(k);
        let back = rollback(&before, &steps[..k], failed, &known).unwrap();
        let mut state = before.clone();
        for s in &steps[..k] {
            apply_step(&mut state, s, &known);
        }
        if let Some(f) = failed {
            apply_failed_step(&mut state, f, &known);
        }
        for s in &back {
            strict_apply(&mut state, s, &known).map_err(TestCaseError::fail)?;
        }
        // A module never configured before cannot be unconfigured: its config is not compared.
        let mut got = summary(&state);
        let expected = summary(&before);
        for (g, e) in got.iter_mut().zip(&expected) {
            if e.2.is_none() {
                g.2 = None;
            }
        }
        prop_assert_eq!(got, expected);
    }
}
