//! Drain (He et al., ICWS 2017): online template mining with a fixed-depth prefix tree.
//!
//! A masked message is split into tokens; the tree's first layer is keyed by the token count, the next
//! `depth - 2` layers by the first tokens (a token with a variable in it goes under `<*>`; a node with
//! `max_children` children sends new tokens to `<*>` too), and a leaf holds templates. The leaf's most
//! similar template (share of equal tokens at equal positions, wildcards not counting) takes the message
//! when the share reaches `similarity`; the positions where they differ become `<*>`. Otherwise the
//! message starts a new template.
//!
//! Memory is bounded: at most `max_templates` templates (the least recently seen is evicted, its tree
//! branch pruned), at most `max_tokens` tokens per message (the rest is cut).

use std::collections::{BTreeSet, HashMap};
use std::fmt;

use crate::mask::{self, WILDCARD};

/// Tuning of the miner. The defaults are the values chosen by leave-one-system-out cross-validation
/// on seven Loghub systems (BENCHMARKS.md, "Log template mining").
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DrainConfig {
    /// Depth of the tree, counting the root and the token-count layer: `depth - 2` first tokens key it.
    pub depth: usize,
    /// Share of equal tokens (0..1) for a message to join a template.
    pub similarity: f64,
    /// Children per node before new tokens go under `<*>`.
    pub max_children: usize,
    /// Templates kept; the least recently seen is evicted past it.
    pub max_templates: usize,
    /// Tokens of a message that are mined; the rest is cut.
    pub max_tokens: usize,
}

impl Default for DrainConfig {
    fn default() -> Self {
        Self { depth: 4, similarity: 0.3, max_children: 100, max_templates: 1000, max_tokens: 128 }
    }
}

/// A template's identity within one miner: never reused, also after an eviction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TemplateId(pub u32);

impl fmt::Display for TemplateId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What mining one message did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mined {
    /// The template the message belongs to.
    pub id: TemplateId,
    /// True when the message started this template.
    pub created: bool,
    /// A template evicted to make room for a new one.
    pub evicted: Option<TemplateId>,
}

struct Cluster {
    tokens: Vec<Box<str>>,
    /// The keys from the token-count layer's child down to the leaf.
    path: Vec<Box<str>>,
    last_seen: u64,
}

#[derive(Default)]
struct Node {
    children: HashMap<Box<str>, Node>,
    templates: Vec<TemplateId>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.children.is_empty() && self.templates.is_empty()
    }
}

/// An online Drain miner.
pub struct Drain {
    config: DrainConfig,
    by_length: HashMap<usize, Node>,
    clusters: HashMap<TemplateId, Cluster>,
    /// (last seen, id): the least recently seen first.
    recency: BTreeSet<(u64, TemplateId)>,
    tick: u64,
    next_id: u32,
    evicted: u64,
    masked: String,
}

impl Drain {
    /// An empty miner.
    pub fn new(config: DrainConfig) -> Self {
        let config = DrainConfig {
            depth: config.depth.max(3),
            max_children: config.max_children.max(2),
            max_templates: config.max_templates.max(1),
            max_tokens: config.max_tokens.max(1),
            ..config
        };
        Self {
            config,
            by_length: HashMap::new(),
            clusters: HashMap::new(),
            recency: BTreeSet::new(),
            tick: 0,
            next_id: 0,
            evicted: 0,
            masked: String::new(),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> DrainConfig {
        self.config
    }

    /// Mines one message (masking it first).
    pub fn add(&mut self, message: &str) -> Mined {
        let mut masked = std::mem::take(&mut self.masked);
        masked.clear();
        let mut tokens: Vec<&str> = Vec::new();
        // Mask token by token into one buffer, then cut it into tokens again.
        for token in message.split_whitespace().take(self.config.max_tokens) {
            if !masked.is_empty() {
                masked.push(' ');
            }
            mask::mask_token(token, &mut masked);
        }
        tokens.extend(masked.split(' ').filter(|token| !token.is_empty()));
        let mined = self.add_tokens(&tokens);
        self.masked = masked;
        mined
    }

    fn add_tokens(&mut self, tokens: &[&str]) -> Mined {
        self.tick += 1;
        let tick = self.tick;
        if let Some(id) = self.search(tokens) {
            let cluster = self.clusters.get_mut(&id).expect("the tree only holds ids of live clusters");
            for (template_token, token) in cluster.tokens.iter_mut().zip(tokens) {
                if &**template_token != *token && &**template_token != WILDCARD {
                    *template_token = WILDCARD.into();
                }
            }
            self.recency.remove(&(cluster.last_seen, id));
            cluster.last_seen = tick;
            self.recency.insert((tick, id));
            return Mined { id, created: false, evicted: None };
        }
        let evicted = if self.clusters.len() >= self.config.max_templates { self.evict_oldest() } else { None };
        let id = TemplateId(self.next_id);
        self.next_id = self.next_id.wrapping_add(1);
        let path = self.insert_path(tokens, id);
        self.clusters
            .insert(id, Cluster { tokens: tokens.iter().map(|&token| token.into()).collect(), path, last_seen: tick });
        self.recency.insert((tick, id));
        Mined { id, created: true, evicted }
    }

    fn prefix_len(&self, n_tokens: usize) -> usize {
        (self.config.depth - 2).min(n_tokens)
    }

    fn search(&self, tokens: &[&str]) -> Option<TemplateId> {
        let mut node = self.by_length.get(&tokens.len())?;
        for token in &tokens[..self.prefix_len(tokens.len())] {
            node = node.children.get(*token).or_else(|| node.children.get(WILDCARD))?;
        }
        let mut best: Option<(f64, usize, TemplateId)> = None;
        for &id in &node.templates {
            let Some(cluster) = self.clusters.get(&id) else { continue };
            let (similarity, n_wildcards) = similarity(&cluster.tokens, tokens);
            let better = match best {
                None => true,
                Some((best_similarity, best_wildcards, _)) => {
                    similarity > best_similarity || (similarity == best_similarity && n_wildcards > best_wildcards)
                }
            };
            if better {
                best = Some((similarity, n_wildcards, id));
            }
        }
        best.filter(|&(similarity, _, _)| similarity >= self.config.similarity).map(|(_, _, id)| id)
    }

    /// Adds the branch for a new template (as Drain does) and returns its keys.
    fn insert_path(&mut self, tokens: &[&str], id: TemplateId) -> Vec<Box<str>> {
        let prefix_len = self.prefix_len(tokens.len());
        let max_children = self.config.max_children;
        let mut node = self.by_length.entry(tokens.len()).or_default();
        let mut path = Vec::with_capacity(prefix_len);
        for &token in &tokens[..prefix_len] {
            let key: &str = if node.children.contains_key(token) {
                token
            } else if has_variable(token) {
                WILDCARD
            } else if node.children.contains_key(WILDCARD) {
                if node.children.len() < max_children { token } else { WILDCARD }
            } else if node.children.len() + 1 < max_children {
                token
            } else {
                WILDCARD
            };
            path.push(Box::<str>::from(key));
            node = node.children.entry(key.into()).or_default();
        }
        node.templates.push(id);
        path
    }

    fn evict_oldest(&mut self) -> Option<TemplateId> {
        let (_, id) = self.recency.pop_first()?;
        let cluster = self.clusters.remove(&id)?;
        self.evicted += 1;
        let n_tokens = cluster.tokens.len();
        if let Some(root) = self.by_length.get_mut(&n_tokens) {
            remove_from(root, &cluster.path, id);
            if root.is_empty() {
                self.by_length.remove(&n_tokens);
            }
        }
        Some(id)
    }

    /// The template's text (tokens joined by a space), if it is still kept.
    pub fn template(&self, id: TemplateId) -> Option<String> {
        self.clusters.get(&id).map(|cluster| cluster.tokens.join(" "))
    }

    /// Templates kept now.
    pub fn len(&self) -> usize {
        self.clusters.len()
    }

    /// True when no template is kept.
    pub fn is_empty(&self) -> bool {
        self.clusters.is_empty()
    }

    /// Templates evicted so far.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Tree nodes, counting the token-count layer (for tests of boundedness).
    pub fn n_nodes(&self) -> usize {
        fn count(node: &Node) -> usize {
            1 + node.children.values().map(count).sum::<usize>()
        }
        self.by_length.values().map(count).sum()
    }

    /// Bytes held by template tokens and tree keys, roughly (for tests of boundedness).
    pub fn approx_bytes(&self) -> usize {
        let clusters: usize = self
            .clusters
            .values()
            .map(|cluster| cluster.tokens.iter().chain(&cluster.path).map(|token| token.len() + 16).sum::<usize>() + 64)
            .sum();
        clusters + self.n_nodes() * 64
    }
}

/// Removes `id` from the leaf at `path` below `node`, pruning branches left empty.
fn remove_from(node: &mut Node, path: &[Box<str>], id: TemplateId) {
    match path.split_first() {
        None => node.templates.retain(|&kept| kept != id),
        Some((key, rest)) => {
            if let Some(child) = node.children.get_mut(key) {
                remove_from(child, rest, id);
                if child.is_empty() {
                    node.children.remove(key);
                }
            }
        }
    }
}

/// Drain's similarity: equal tokens at equal positions over the length, and the template's wildcards.
fn similarity(template: &[Box<str>], tokens: &[&str]) -> (f64, usize) {
    let mut n_equal = 0usize;
    let mut n_wildcards = 0usize;
    for (template_token, token) in template.iter().zip(tokens) {
        if &**template_token == WILDCARD {
            n_wildcards += 1;
        } else if &**template_token == *token {
            n_equal += 1;
        }
    }
    if template.is_empty() {
        return (1.0, 0);
    }
    (n_equal as f64 / template.len() as f64, n_wildcards)
}

fn has_variable(token: &str) -> bool {
    token.contains(WILDCARD) || token.bytes().any(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mine(lines: &[&str]) -> (Drain, Vec<Mined>) {
        let mut drain = Drain::new(DrainConfig::default());
        let mined = lines.iter().map(|line| drain.add(line)).collect();
        (drain, mined)
    }

    #[test]
    fn merges_lines_of_one_template_and_separates_others() {
        let (drain, mined) = mine(&[
            "Receiving block blk_1 src: /10.0.0.1:5000 dest: /10.0.0.2:50010",
            "Receiving block blk_2 src: /10.0.0.3:5001 dest: /10.0.0.4:50010",
            "Deleting block blk_3 file /data/current/blk_3",
            "connection refused to orders",
            "connection refused to payments",
        ]);
        assert!(mined[0].created && !mined[1].created && mined[2].created && mined[3].created && !mined[4].created);
        assert_eq!(mined[0].id, mined[1].id);
        assert_eq!(drain.template(mined[0].id).as_deref(), Some("Receiving block <*> src: <*>:<*> dest: <*>:<*>"));
        assert_eq!(drain.template(mined[3].id).as_deref(), Some("connection refused to <*>"));
        assert_eq!(drain.len(), 3);
    }

    #[test]
    fn evicts_the_least_recently_seen_template_and_prunes_its_branch() {
        let mut drain = Drain::new(DrainConfig { max_templates: 2, ..DrainConfig::default() });
        let first = drain.add("alpha beta gamma");
        let second = drain.add("delta epsilon zeta eta");
        drain.add("alpha beta gamma");
        let third = drain.add("one two");
        assert_eq!(third.evicted, Some(second.id));
        assert_eq!(drain.template(second.id), None);
        assert_eq!(drain.template(first.id).as_deref(), Some("alpha beta gamma"));
        // The evicted template's branch is gone: only the two live templates' branches are left.
        assert_eq!(drain.n_nodes(), 2 * 3);
        let again = drain.add("delta epsilon zeta eta");
        assert!(again.created);
        assert_ne!(again.id, second.id, "ids are never reused");
    }

    #[test]
    fn a_flood_of_unique_lines_stays_within_the_template_cap() {
        let mut drain = Drain::new(DrainConfig { max_templates: 100, ..DrainConfig::default() });
        for idx in 0..20_000u32 {
            // Unique words (no digits), varying lengths: each is a new template.
            let word: String = idx.to_string().bytes().map(|b| char::from(b'a' + (b - b'0'))).collect();
            let line = format!("{word} {} x{}", "w".repeat((idx % 7) as usize + 1), " y".repeat((idx % 5) as usize));
            drain.add(&line);
        }
        assert_eq!(drain.len(), 100);
        assert!(drain.n_nodes() <= 100 * 3 + 10, "{} nodes", drain.n_nodes());
        assert!(drain.evicted() > 19_000);
    }
}
