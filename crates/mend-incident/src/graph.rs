//! The dependency graph between services: who calls whom.

use std::collections::BTreeSet;

use mend_types::ServiceName;

/// Caller → callee edges: declared (`depends_on`) and observed (the proxies' per-caller figures).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DependencyGraph {
    edges: BTreeSet<(ServiceName, ServiceName)>,
}

impl DependencyGraph {
    /// A graph with these caller → callee edges.
    pub fn new(edges: impl IntoIterator<Item = (ServiceName, ServiceName)>) -> Self {
        Self { edges: edges.into_iter().filter(|(caller, callee)| caller != callee).collect() }
    }

    /// Adds an edge (an observed call); returns whether it is new.
    pub fn add(&mut self, caller: ServiceName, callee: ServiceName) -> bool {
        caller != callee && self.edges.insert((caller, callee))
    }

    /// Whether `a` and `b` are adjacent (either calls the other).
    pub fn adjacent(&self, a: &ServiceName, b: &ServiceName) -> bool {
        self.edges.contains(&(a.clone(), b.clone())) || self.edges.contains(&(b.clone(), a.clone()))
    }

    /// Whether `caller` depends on `callee`, directly or through others.
    pub fn depends_on(&self, caller: &ServiceName, callee: &ServiceName) -> bool {
        let mut seen = BTreeSet::new();
        let mut stack = vec![caller.clone()];
        while let Some(next) = stack.pop() {
            for (from, to) in &self.edges {
                if *from == next && seen.insert(to.clone()) {
                    if to == callee {
                        return true;
                    }
                    stack.push(to.clone());
                }
            }
        }
        false
    }

    /// Every edge.
    pub fn edges(&self) -> impl Iterator<Item = &(ServiceName, ServiceName)> {
        self.edges.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(text: &str) -> ServiceName {
        ServiceName::new(text).expect("valid name")
    }

    #[test]
    fn dependencies_are_transitive_and_adjacency_is_symmetric() {
        let graph = DependencyGraph::new([(name("web"), name("api")), (name("api"), name("db"))]);
        assert!(graph.depends_on(&name("web"), &name("db")));
        assert!(!graph.depends_on(&name("db"), &name("web")));
        assert!(graph.adjacent(&name("db"), &name("api")));
        assert!(!graph.adjacent(&name("web"), &name("db")));
    }
}
