//! Two simple rankers to measure [`rank`](crate::rank()) against, on the same cases and onsets:
//! ranking by the largest z-score (mean and standard deviation) and by the largest robust score
//! (median and IQR, no sustain, no graph).

use std::collections::BTreeMap;

use mend_types::Timestamp;

use crate::robust::Baseline;
use crate::{Component, RankParams, SeriesInput};

/// Which simple ranker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SimpleRanker {
    /// Largest `|x − mean| / std` after the onset, baseline the hour before.
    ZScore,
    /// Largest `|x − median| / (IQR / 1.349)` after the onset (the same scale floor as mend's), one
    /// point enough.
    Robust,
}

/// Components by their single most deviant point after `onset`, most deviant first.
pub fn rank_simple(
    ranker: SimpleRanker,
    series: &[SeriesInput],
    onset: Timestamp,
    now: Timestamp,
    params: &RankParams,
) -> Vec<(Component, f64)> {
    let start = onset.saturating_sub(params.baseline);
    let mut best: BTreeMap<&Component, f64> = BTreeMap::new();
    for one in series {
        let base: Vec<f64> =
            one.points.iter().filter(|(t, v)| *t >= start && *t < onset && v.is_finite()).map(|&(_, v)| v).collect();
        if base.len() < params.min_baseline_points.max(2) {
            continue;
        }
        let score_of: Box<dyn Fn(f64) -> f64> = match ranker {
            SimpleRanker::ZScore => {
                let mean = base.iter().sum::<f64>() / base.len() as f64;
                let var = base.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / base.len() as f64;
                let std = var.sqrt().max(f64::MIN_POSITIVE);
                Box::new(move |v| ((v - mean) / std).abs().min(1e12))
            }
            SimpleRanker::Robust => {
                let Some(baseline) = Baseline::of(&base, 2, params.relative_floor) else { continue };
                Box::new(move |v| baseline.z(v).abs())
            }
        };
        let score = one
            .points
            .iter()
            .filter(|(t, v)| *t >= onset && *t <= now && v.is_finite())
            .map(|&(_, v)| score_of(v))
            .fold(0.0, f64::max);
        let entry = best.entry(&one.component).or_insert(0.0);
        *entry = entry.max(score);
    }
    let mut ranked: Vec<(Component, f64)> = best.into_iter().map(|(c, s)| (c.clone(), s)).collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    ranked
}
