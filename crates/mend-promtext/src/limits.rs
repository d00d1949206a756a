//! Bounds on what one exposition may contain, so that a hostile or broken target cannot exhaust memory.

/// Bounds checked while parsing; exceeding one rejects the exposition with a located error.
///
/// With these bounds the parsed result takes memory linear in the input size (a sample or label costs a bounded
/// number of bytes of bookkeeping per byte of input), and no single line can make the parser do more than
/// `O(max_line_bytes · log max_labels)` work. The caller bounds the input itself (the scrape body size).
///
/// The defaults are far above what real exporters produce (node_exporter: lines under 300 bytes, at most 10 labels,
/// about 2,000 samples; kube-state-metrics on a large cluster: a few 100,000 samples) and low enough that a single
/// scrape cannot take more than a few hundred MiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest line, in bytes, without its line ending. Default 65,536.
    pub max_line_bytes: usize,
    /// Longest metric or label name, in bytes. Default 1,024.
    pub max_name_bytes: usize,
    /// Most labels in one label set (a sample's, or an exemplar's). Default 128.
    pub max_labels: usize,
    /// Longest label value, in bytes as written (before unescaping). Default 16,384.
    pub max_label_value_bytes: usize,
    /// Most samples in one exposition. Default 1,000,000.
    pub max_samples: usize,
    /// Most metric families in one exposition. Default 100,000.
    pub max_families: usize,
}

impl Limits {
    /// The default bounds (see the field docs).
    pub const DEFAULT: Limits = Limits {
        max_line_bytes: 64 * 1024,
        max_name_bytes: 1024,
        max_labels: 128,
        max_label_value_bytes: 16 * 1024,
        max_samples: 1_000_000,
        max_families: 100_000,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}
