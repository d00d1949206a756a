//! One service's log miner: a line's level and message (structured lines read, others looked at for a
//! level in their header), the message mined by [`Drain`], and per template: counts by level, an
//! example, when it was first and last seen. Bounded: lines are cut at [`MAX_LINE_BYTES`], examples at
//! [`MAX_EXAMPLE_BYTES`], templates at the Drain's cap (statistics leave with their template).

use std::collections::HashMap;

use mend_types::Timestamp;

use crate::drain::{Drain, DrainConfig, TemplateId};
use crate::level::{self, Level};
use crate::structured;

/// Bytes of a line that are looked at; the rest is ignored.
pub const MAX_LINE_BYTES: usize = 4096;
/// Bytes of a template's example line kept.
pub const MAX_EXAMPLE_BYTES: usize = 512;

/// What one line was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Observation {
    /// Its template.
    pub template: TemplateId,
    /// Its level.
    pub level: Level,
    /// True when the line started the template.
    pub new_template: bool,
}

/// A template as people see it.
#[derive(Clone, Debug, PartialEq)]
pub struct Pattern {
    /// Its identity.
    pub id: TemplateId,
    /// Its text, `<*>` for variables.
    pub template: String,
    /// The most severe level it was seen at.
    pub level: Level,
    /// Lines that matched it.
    pub count: u64,
    /// Lines per level, for the levels it was seen at.
    pub counts: Vec<(Level, u64)>,
    /// The first line that made it, cut at [`MAX_EXAMPLE_BYTES`].
    pub example: String,
    /// When it was first seen.
    pub first_seen: Timestamp,
    /// When it was last seen.
    pub last_seen: Timestamp,
}

struct Stats {
    counts: [u64; Level::ALL.len()],
    example: String,
    first_seen: Timestamp,
    last_seen: Timestamp,
}

/// One service's miner.
pub struct LogMiner {
    drain: Drain,
    stats: HashMap<TemplateId, Stats>,
    n_lines: u64,
}

/// Cuts `text` to at most `max` bytes at a character boundary.
pub fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// A line's level and its message (what is mined): a structured line's fields, else the text after the
/// header and level.
pub fn split_line(line: &str) -> (Level, std::borrow::Cow<'_, str>) {
    if let Some((level, message)) = structured::parse(line) {
        return (level, message.into());
    }
    let (level, at) = level::extract(line);
    (level, line[at..].into())
}

impl LogMiner {
    /// An empty miner.
    pub fn new(config: DrainConfig) -> Self {
        Self { drain: Drain::new(config), stats: HashMap::new(), n_lines: 0 }
    }

    /// Mines one line seen `at`.
    pub fn observe(&mut self, line: &str, at: Timestamp) -> Observation {
        let line = cut(line, MAX_LINE_BYTES);
        let (level, message) = split_line(line);
        let mined = self.drain.add(&message);
        self.n_lines += 1;
        if let Some(evicted) = mined.evicted {
            self.stats.remove(&evicted);
        }
        let stats = self.stats.entry(mined.id).or_insert_with(|| Stats {
            counts: [0; Level::ALL.len()],
            example: cut(line, MAX_EXAMPLE_BYTES).to_owned(),
            first_seen: at,
            last_seen: at,
        });
        stats.counts[level as usize] += 1;
        stats.last_seen = stats.last_seen.max(at);
        Observation { template: mined.id, level, new_template: mined.created }
    }

    /// The template's text, if kept.
    pub fn template(&self, id: TemplateId) -> Option<String> {
        self.drain.template(id)
    }

    /// Lines mined so far.
    pub fn n_lines(&self) -> u64 {
        self.n_lines
    }

    /// Templates kept now.
    pub fn n_templates(&self) -> usize {
        self.drain.len()
    }

    /// Templates evicted so far.
    pub fn evicted(&self) -> u64 {
        self.drain.evicted()
    }

    /// Rough bytes held (templates, tree, examples).
    pub fn approx_bytes(&self) -> usize {
        self.drain.approx_bytes() + self.stats.values().map(|stats| stats.example.len() + 96).sum::<usize>()
    }

    /// Counts per (template, level), for the series store.
    pub fn counts(&self) -> impl Iterator<Item = (TemplateId, Level, u64)> + '_ {
        self.stats.iter().flat_map(|(&id, stats)| {
            Level::ALL
                .iter()
                .zip(stats.counts)
                .filter(|&(_, count)| count > 0)
                .map(move |(&level, count)| (id, level, count))
        })
    }

    /// Every template kept, most frequent first.
    pub fn patterns(&self) -> Vec<Pattern> {
        let mut patterns: Vec<Pattern> = self
            .stats
            .iter()
            .filter_map(|(&id, stats)| {
                let counts: Vec<(Level, u64)> =
                    Level::ALL.iter().zip(stats.counts).filter(|&(_, count)| count > 0).map(|(&l, c)| (l, c)).collect();
                Some(Pattern {
                    id,
                    template: self.drain.template(id)?,
                    level: counts.iter().map(|&(level, _)| level).max().unwrap_or(Level::Unknown),
                    count: counts.iter().map(|&(_, count)| count).sum(),
                    counts,
                    example: stats.example.clone(),
                    first_seen: stats.first_seen,
                    last_seen: stats.last_seen,
                })
            })
            .collect();
        patterns.sort_by(|a, b| b.count.cmp(&a.count).then(a.id.cmp(&b.id)));
        patterns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_templates_by_level_and_keeps_an_example() {
        let mut miner = LogMiner::new(DrainConfig::default());
        let at = Timestamp::from_millis(1_000);
        let first = miner.observe("2024-01-01T00:00:00Z ERROR connection refused to db:5432", at);
        let second = miner.observe("2024-01-01T00:00:01Z WARN connection refused to db:5433", at);
        let json = miner.observe(r#"{"level":"error","msg":"connection refused to cache:6379","ts":3}"#, at);
        assert!(first.new_template && !second.new_template && !json.new_template);
        assert_eq!((first.level, second.level, json.level), (Level::Error, Level::Warn, Level::Error));
        let patterns = miner.patterns();
        assert_eq!(patterns.len(), 1);
        assert_eq!(patterns[0].template, "connection refused to <*>");
        assert_eq!(patterns[0].count, 3);
        assert_eq!(patterns[0].level, Level::Error);
        assert_eq!(patterns[0].counts, vec![(Level::Warn, 1), (Level::Error, 2)]);
        assert_eq!(patterns[0].example, "2024-01-01T00:00:00Z ERROR connection refused to db:5432");
    }

    #[test]
    fn memory_stays_bounded_under_a_flood_of_unique_long_lines() {
        let mut miner = LogMiner::new(DrainConfig { max_templates: 200, ..DrainConfig::default() });
        let at = Timestamp::from_millis(0);
        let mut peak = 0;
        for idx in 0..3_000u32 {
            let word: String = idx.to_string().bytes().map(|b| char::from(b'a' + (b - b'0'))).collect();
            // Long lines of unique words (no template can take two of them): cut at MAX_LINE_BYTES.
            let words: Vec<String> = (0..200).map(|k| format!("{word}{}", char::from(b'a' + (k % 26) as u8))).collect();
            let line = format!("ERROR {} {}", words.join(" "), "q".repeat(10_000 + (idx % 3) as usize));
            miner.observe(&line, at);
            peak = peak.max(miner.approx_bytes());
        }
        assert_eq!(miner.n_templates(), 200);
        assert_eq!(miner.patterns().len(), 200);
        assert!(miner.evicted() >= 2_800);
        // 200 templates of at most 128 tokens (each under MAX_LINE_BYTES), their examples and tree keys.
        assert!(peak < 200 * (MAX_LINE_BYTES + 128 * 16 + MAX_EXAMPLE_BYTES + 1_000), "peak {peak} bytes");
    }
}
