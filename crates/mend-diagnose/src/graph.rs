//! The dependency graph: who calls whom, declared (`depends_on`) or observed (the proxy's callers).

use std::collections::{BTreeMap, BTreeSet};

use crate::Component;

/// Where an edge comes from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum EdgeSource {
    /// The config says the caller depends on the callee (`depends_on`).
    Declared,
    /// The proxy saw the caller send requests to the callee, with their error ratio and latency (p99, in
    /// seconds) when known.
    Observed {
        /// Share of the calls that failed, 0..1.
        error_ratio: Option<f64>,
        /// 99th percentile latency of the calls, seconds.
        p99_seconds: Option<f64>,
    },
}

/// Caller → callee edges between components. Empty when nothing is known (replayed data from other
/// systems often comes without one): ranking then works from the series alone.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DependencyGraph {
    callees: BTreeMap<Component, BTreeMap<Component, EdgeSource>>,
    callers: BTreeMap<Component, BTreeSet<Component>>,
}

impl DependencyGraph {
    /// An empty graph.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `caller → callee`; an observed edge replaces a declared one (it carries more). Self-edges are
    /// ignored.
    pub fn add(&mut self, caller: Component, callee: Component, source: EdgeSource) {
        if caller == callee {
            return;
        }
        let edges = self.callees.entry(caller.clone()).or_default();
        match edges.get(&callee) {
            Some(EdgeSource::Observed { .. }) if source == EdgeSource::Declared => {}
            _ => {
                edges.insert(callee.clone(), source);
            }
        }
        self.callers.entry(callee).or_default().insert(caller);
    }

    /// True when no edge is known.
    pub fn is_empty(&self) -> bool {
        self.callees.is_empty()
    }

    /// The edge `caller → callee`, if known.
    pub fn edge(&self, caller: &Component, callee: &Component) -> Option<EdgeSource> {
        self.callees.get(caller)?.get(callee).copied()
    }

    /// What `caller` calls directly.
    pub fn callees(&self, caller: &Component) -> impl Iterator<Item = &Component> {
        self.callees.get(caller).into_iter().flat_map(BTreeMap::keys)
    }

    /// Who calls `callee` directly.
    pub fn callers(&self, callee: &Component) -> impl Iterator<Item = &Component> {
        self.callers.get(callee).into_iter().flatten()
    }

    /// Whether `from` reaches `to` through one or more calls, and the path (without `from`) when it does.
    pub fn path(&self, from: &Component, to: &Component) -> Option<Vec<Component>> {
        let mut previous: BTreeMap<&Component, &Component> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([from]);
        let mut seen = BTreeSet::from([from]);
        while let Some(node) = queue.pop_front() {
            for next in self.callees(node) {
                if !seen.insert(next) {
                    continue;
                }
                previous.insert(next, node);
                if next == to {
                    let mut path = vec![next.clone()];
                    let mut at = next;
                    while let Some(&before) = previous.get(at) {
                        if before == from {
                            break;
                        }
                        path.push(before.clone());
                        at = before;
                    }
                    path.reverse();
                    return Some(path);
                }
                queue.push_back(next);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(name: &str) -> Component {
        Component::new(name)
    }

    #[test]
    fn paths_follow_calls_and_observed_edges_win() {
        let mut graph = DependencyGraph::new();
        graph.add(c("web"), c("orders"), EdgeSource::Declared);
        graph.add(c("orders"), c("db"), EdgeSource::Declared);
        graph.add(c("db"), c("db"), EdgeSource::Declared);
        let observed = EdgeSource::Observed { error_ratio: Some(0.4), p99_seconds: None };
        graph.add(c("web"), c("orders"), observed);
        graph.add(c("web"), c("orders"), EdgeSource::Declared);
        assert_eq!(graph.edge(&c("web"), &c("orders")), Some(observed));
        assert_eq!(graph.path(&c("web"), &c("db")), Some(vec![c("orders"), c("db")]));
        assert_eq!(graph.path(&c("db"), &c("web")), None);
        assert_eq!(graph.callers(&c("orders")).collect::<Vec<_>>(), [&c("web")]);
        assert!(graph.edge(&c("db"), &c("db")).is_none());
    }
}
