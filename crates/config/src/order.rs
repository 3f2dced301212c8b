//! Start order: `requires` / `provides` as a graph, sorted topologically with ties broken by
//! priority, then name. Stop order is the reverse.

use crate::service::ServiceDef;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};

/// Why services cannot be ordered.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    /// Services that require each other in a circle, in order (`a` requires `b`, which
    /// requires `a`: `["a", "b"]`; the first is not repeated).
    #[error("dependency cycle: {}", cycle_text(.0))]
    Cycle(Vec<String>),
    /// `service` requires `requires`, which no (remaining) service provides.
    #[error("`{service}` requires `{requires}`, which no service provides")]
    Missing {
        /// The service with the requirement.
        service: String,
        /// What it requires.
        requires: String,
    },
}

fn cycle_text(names: &[String]) -> String {
    let mut parts: Vec<&str> = names.iter().map(String::as_str).collect();
    if let Some(first) = names.first() {
        parts.push(first);
    }
    parts.join(" → ")
}

/// The start order of `services` (names), or the first problem found. A service implicitly
/// provides its own name; it starts after every service providing something it requires.
pub fn start_order(services: &[ServiceDef]) -> Result<Vec<String>, OrderError> {
    let plan = plan(services);
    if let Some((_, e)) = plan.dropped.into_iter().next() {
        return Err(e);
    }
    Ok(plan
        .order
        .iter()
        .filter_map(|&i| services.get(i).map(|s| s.name.clone()))
        .collect())
}

/// The services that can start, in order, and those that cannot, with why.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    /// Indexes into the input, in start order.
    pub order: Vec<usize>,
    /// Indexes into the input of dropped services.
    pub dropped: Vec<(usize, OrderError)>,
}

/// Orders what can be ordered; drops services with missing requirements (repeatedly, as
/// dropping one can strand others) and services on cycles.
pub(crate) fn plan(services: &[ServiceDef]) -> Plan {
    let n = services.len();
    let mut providers: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, s) in services.iter().enumerate() {
        providers.entry(s.name.as_str()).or_default().push(i);
        for p in &s.provides {
            providers.entry(p.as_str()).or_default().push(i);
        }
    }
    let mut alive = vec![true; n];
    let mut plan = Plan::default();
    loop {
        drop_missing(services, &providers, &mut alive, &mut plan);
        // deps[i]: the live services i must start after.
        let deps: Vec<BTreeSet<usize>> = services
            .iter()
            .map(|s| {
                s.requires
                    .iter()
                    .flat_map(|r| providers.get(r.as_str()).into_iter().flatten())
                    .copied()
                    .filter(|&p| alive.get(p).copied().unwrap_or(false))
                    .collect()
            })
            .collect();
        let (order, left) = topo(services, &alive, &deps);
        if left.is_empty() {
            plan.order = order;
            return plan;
        }
        let cycles = cycles(services, &left, &deps);
        if cycles.is_empty() {
            // Cannot happen (what Kahn's algorithm leaves is on or behind a cycle), but never
            // loop forever: drop the rest as missing.
            plan.order = order;
            for i in left {
                if let Some(s) = services.get(i) {
                    let requires = s.requires.first().cloned().unwrap_or_default();
                    plan.dropped.push((
                        i,
                        OrderError::Missing {
                            service: s.name.clone(),
                            requires,
                        },
                    ));
                }
            }
            return plan;
        }
        for (i, names) in cycles {
            if let Some(a) = alive.get_mut(i) {
                *a = false;
            }
            plan.dropped.push((i, OrderError::Cycle(names)));
        }
    }
}

fn drop_missing(
    services: &[ServiceDef],
    providers: &BTreeMap<&str, Vec<usize>>,
    alive: &mut [bool],
    plan: &mut Plan,
) {
    loop {
        let mut changed = false;
        for (i, s) in services.iter().enumerate() {
            if !alive.get(i).copied().unwrap_or(false) {
                continue;
            }
            let missing = s.requires.iter().find(|r| {
                !providers
                    .get(r.as_str())
                    .is_some_and(|ps| ps.iter().any(|&p| alive.get(p).copied().unwrap_or(false)))
            });
            if let Some(r) = missing {
                alive[i] = false;
                changed = true;
                plan.dropped.push((
                    i,
                    OrderError::Missing {
                        service: s.name.clone(),
                        requires: r.clone(),
                    },
                ));
            }
        }
        if !changed {
            return;
        }
    }
}

/// Kahn's algorithm over the live services; returns the order and what is left over.
fn topo(
    services: &[ServiceDef],
    alive: &[bool],
    deps: &[BTreeSet<usize>],
) -> (Vec<usize>, Vec<usize>) {
    let live = |i: usize| alive.get(i).copied().unwrap_or(false);
    let mut waiting: Vec<usize> = deps.iter().map(BTreeSet::len).collect();
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); services.len()];
    for (i, ds) in deps.iter().enumerate() {
        for &d in ds {
            dependents[d].push(i);
        }
    }
    let key = |i: usize| {
        services
            .get(i)
            .map(|s| Reverse((s.priority, s.name.clone(), i)))
    };
    let mut ready: BinaryHeap<_> = (0..services.len())
        .filter(|&i| live(i) && waiting[i] == 0)
        .filter_map(key)
        .collect();
    let mut order = Vec::new();
    while let Some(Reverse((_, _, i))) = ready.pop() {
        order.push(i);
        for &j in &dependents[i] {
            waiting[j] = waiting[j].saturating_sub(1);
            if waiting[j] == 0 && live(j) {
                ready.extend(key(j));
            }
        }
    }
    let done: BTreeSet<usize> = order.iter().copied().collect();
    let left = (0..services.len())
        .filter(|&i| live(i) && !done.contains(&i))
        .collect();
    (order, left)
}

/// The services among `left` that are on a cycle, each with the cycle to report (one cycle
/// per strongly connected group, starting from its first name).
fn cycles(
    services: &[ServiceDef],
    left: &[usize],
    deps: &[BTreeSet<usize>],
) -> Vec<(usize, Vec<String>)> {
    let name = |i: usize| services.get(i).map(|s| s.name.clone()).unwrap_or_default();
    let mut by_name = left.to_vec();
    by_name.sort_by_key(|&i| name(i));
    let reach: BTreeMap<usize, BTreeMap<usize, usize>> =
        by_name.iter().map(|&v| (v, reach_from(v, deps))).collect();
    let on_cycle = |v: usize| reach.get(&v).is_some_and(|r| r.contains_key(&v));
    let mut assigned = BTreeSet::new();
    let mut out = Vec::new();
    for &v in &by_name {
        if assigned.contains(&v) || !on_cycle(v) {
            continue;
        }
        let Some(rv) = reach.get(&v) else { continue };
        // The path v → … → v, from the BFS parents.
        let mut path = vec![v];
        let mut cur = rv.get(&v).copied().unwrap_or(v);
        while cur != v && path.len() <= deps.len() {
            path.push(cur);
            cur = rv.get(&cur).copied().unwrap_or(v);
        }
        path.reverse();
        path.rotate_right(1);
        let names: Vec<String> = path.iter().map(|&i| name(i)).collect();
        for &u in &by_name {
            let mutual = rv.contains_key(&u) && reach.get(&u).is_some_and(|ru| ru.contains_key(&v));
            if mutual && assigned.insert(u) {
                out.push((u, names.clone()));
            }
        }
    }
    out
}

/// Breadth-first search along `deps` from `start`: every reachable node (`start` only if it is
/// on a cycle) mapped to the node it was reached from.
fn reach_from(start: usize, deps: &[BTreeSet<usize>]) -> BTreeMap<usize, usize> {
    let mut parent = BTreeMap::new();
    let mut queue = VecDeque::from([start]);
    while let Some(u) = queue.pop_front() {
        for &d in deps.get(u).into_iter().flatten() {
            if let std::collections::btree_map::Entry::Vacant(e) = parent.entry(d) {
                e.insert(u);
                queue.push_back(d);
            }
        }
    }
    parent
}
