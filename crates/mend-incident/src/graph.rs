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

    /// Whether one of `a` and `b` depends on the other, directly or through others (a chain's ends are
    /// related; two callers of the same service are not).
    pub fn related(&self, a: &ServiceName, b: &ServiceName) -> bool {
        self.depends_on(a, b) || self.depends_on(b, a)
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

    /// `services`, what they call (directly or further down) and who calls them directly: where the
    /// cause of their trouble may be, and who may suffer from it. At most `max` services: the given
    /// ones first, then the nearest along the calls.
    pub fn neighbourhood(&self, services: &BTreeSet<ServiceName>, max: usize) -> BTreeSet<ServiceName> {
        let mut found: BTreeSet<ServiceName> = services.iter().take(max).cloned().collect();
        let mut queue: std::collections::VecDeque<ServiceName> = found.iter().cloned().collect();
        // Callees, breadth first: a dependency's trouble travels up to its callers.
        while let Some(next) = queue.pop_front() {
            for (from, to) in &self.edges {
                if found.len() >= max {
                    return found;
                }
                if *from == next && found.insert(to.clone()) {
                    queue.push_back(to.clone());
                }
            }
        }
        // Direct callers of the given services: they may suffer too.
        for (from, to) in &self.edges {
            if found.len() >= max {
                break;
            }
            if services.contains(to) {
                found.insert(from.clone());
            }
        }
        found
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

    #[test]
    fn the_neighbourhood_reaches_every_dependency_and_the_direct_callers_within_its_bound() {
        let graph = DependencyGraph::new([
            (name("web"), name("api")),
            (name("api"), name("db")),
            (name("admin"), name("api")),
            (name("cron"), name("admin")),
        ]);
        let names = |set: BTreeSet<ServiceName>| set.iter().map(|s| s.as_str().to_owned()).collect::<Vec<_>>();
        let api = BTreeSet::from([name("api")]);
        assert_eq!(names(graph.neighbourhood(&api, 10)), ["admin", "api", "db", "web"]);
        assert_eq!(names(graph.neighbourhood(&BTreeSet::from([name("web")]), 10)), ["api", "db", "web"]);
        assert_eq!(names(graph.neighbourhood(&api, 2)), ["api", "db"]);
    }
}
