//! Start order from requires / provides / priority.

use crate::svc;
use reeve_config::{OrderError, start_order};

fn order(services: &[reeve_config::ServiceDef]) -> Vec<String> {
    start_order(services).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn requires_provides_and_priority() {
    let services = vec![
        svc(
            "web",
            "command = [\"w\"]\nrequires = [\"database\", \"cache\"]\npriority = -10",
        ),
        svc(
            "pg",
            "command = [\"p\"]\nprovides = [\"database\"]\npriority = 5",
        ),
        svc(
            "redis",
            "command = [\"r\"]\nprovides = [\"cache\"]\npriority = 1",
        ),
        svc("metrics", "command = [\"m\"]\npriority = 1"),
        svc("aaa", "command = [\"a\"]\npriority = 1"),
        svc(
            "worker",
            "command = [\"k\"]\nrequires = [\"web\"]\npriority = -100",
        ),
    ];
    // Free services go by priority, then name; a dependent waits for its providers.
    assert_eq!(
        order(&services),
        ["aaa", "metrics", "redis", "pg", "web", "worker"]
    );
}

#[test]
fn a_cycle_is_named() {
    let services = vec![
        svc("a", "command = [\"a\"]\nrequires = [\"b\"]"),
        svc("b", "command = [\"b\"]\nrequires = [\"cx\"]"),
        svc(
            "c",
            "command = [\"c\"]\nprovides = [\"cx\"]\nrequires = [\"a\"]",
        ),
        svc("free", "command = [\"f\"]"),
    ];
    let e = start_order(&services).err();
    assert_eq!(
        e,
        Some(OrderError::Cycle(vec!["a".into(), "b".into(), "c".into()]))
    );
    assert_eq!(
        e.map(|e| e.to_string()).unwrap_or_default(),
        "dependency cycle: a → b → c → a"
    );
    let own = vec![svc(
        "selfish",
        "command = [\"s\"]\nrequires = [\"selfish\"]",
    )];
    assert_eq!(
        start_order(&own).map_err(|e| e.to_string()),
        Err("dependency cycle: selfish → selfish".into())
    );
}

#[test]
fn a_missing_requirement() {
    let services = vec![svc("web", "command = [\"w\"]\nrequires = [\"db\"]")];
    assert_eq!(
        start_order(&services),
        Err(OrderError::Missing {
            service: "web".into(),
            requires: "db".into()
        })
    );
}

#[test]
fn empty_is_fine() {
    assert_eq!(start_order(&[]), Ok(vec![]));
}
