//! Dev loop for NAB: `run` and `score` as the mend CLI will, plus `eval` (in memory, with splits).
//!
//! ```text
//! cargo run --release --example nab -- run   --data DIR --out DIR [--detector NAME] [--sensitivity S]
//! cargo run --release --example nab -- score --data DIR --labels FILE --results DIR [--detector NAME]
//! cargo run --release --example nab -- eval  --data DIR --labels FILE [--detector NAME] [--params JSON] [--files]
//! cargo run --release --example nab -- cv    [--detector SPEC,...] [--grid FILE] [--results DIR] [--repeats N] [--seed S]
//!                                                [--each] [--alarm] [--cad-params JSON]
//! ```
//!
//! A `cv` detector SPEC is a registered name, `cad_ose_known_range` (CAD OSE given each file's minimum and
//! maximum up front, as NAB runs it: not online, only to measure what learning the range costs),
//! `cad_ose_unbounded` (NAB's CAD OSE as it is: unbounded memory, the file's range, rest = probation / 5;
//! a reference, not a mend detector), `cad_ose_unbounded_online` (the same with the range learnt online and
//! `cad_ose`'s rest period), `cad_ose_unbounded_headroom` (online, quantised over the range seen widened by
//! half of it on each side, re-quantised only when a value falls outside), `A+B`: the larger of A's and B's scores per point (all put their alarm
//! level at 0.5), or `alarm:A`: A's alarm decision, 1 where A's score is at least 0.5, else 0 (scoring then chooses no
//! threshold). `--alarm` scores every candidate by its alarm decision.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use mend_detect::attach::ALARM_SCORE;
use mend_detect::{AnyDetector, CadOseDetector, CadOseParams, EnsembleDetector, EnsembleParams, Sensitivity, registry};
use mend_nab::crossval::{
    Candidate, Spread, alarm_decisions, cross_validate, leave_one_category_out, stratified_splits,
};
use mend_nab::{LabelledFile, Profile, ProfileScore, ScoredFile, detect_corpus, load_labelled_corpus, score_corpus};

struct Args {
    command: String,
    flags: BTreeMap<String, String>,
}

fn parse_args() -> Result<Args, String> {
    let mut raw = std::env::args().skip(1);
    let command = raw.next().ok_or("missing command: run | score | eval | cv | sweep | robust")?;
    let mut flags = BTreeMap::new();
    while let Some(flag) = raw.next() {
        let key = flag.strip_prefix("--").ok_or_else(|| format!("unexpected argument {flag:?}"))?;
        let value = if matches!(key, "files" | "windows" | "explain" | "each" | "alarm") {
            String::new()
        } else {
            raw.next().ok_or(format!("--{key} needs a value"))?
        };
        flags.insert(key.to_owned(), value);
    }
    Ok(Args { command, flags })
}

fn main() -> ExitCode {
    match real_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn real_main() -> Result<(), String> {
    let args = parse_args()?;
    let flag = |name: &str, default: &str| args.flags.get(name).cloned().unwrap_or_else(|| default.to_owned());
    let data = PathBuf::from(flag("data", "/work/shared/nab/data"));
    let labels = PathBuf::from(flag("labels", "/work/shared/nab/labels/combined_windows.json"));
    let detector = flag("detector", "default");
    let sensitivity: f64 = flag("sensitivity", "0.5").parse().map_err(|_| "bad --sensitivity")?;
    let sensitivity = Sensitivity::new(sensitivity).map_err(|e| e.to_string())?;
    match args.command.as_str() {
        "run" => {
            let out = PathBuf::from(flag("out", "results"));
            let summary = mend_nab::run_corpus(&data, &out, &detector, sensitivity, |progress| {
                eprintln!(
                    "[{}/{}] {} ({} rows)",
                    progress.file_idx + 1,
                    progress.n_files,
                    progress.rel_path,
                    progress.n_rows
                );
            })
            .map_err(|e| error_chain(&e))?;
            println!("{} files, {} rows -> {}", summary.n_files, summary.n_rows, summary.detector_dir.display());
        }
        "score" => {
            let results = PathBuf::from(flag("results", "results"));
            let profiles = match args.flags.get("profiles") {
                Some(path) => mend_nab::read_profiles(&PathBuf::from(path)).map_err(|e| error_chain(&e))?,
                None => Profile::nab_profiles(),
            };
            let scores =
                mend_nab::score(&data, &labels, &results, &detector, &profiles).map_err(|e| error_chain(&e))?;
            print_scores(&scores, args.flags.contains_key("files"));
        }
        "eval" => {
            let corpus = load_labelled_corpus(&data, &labels).map_err(|e| error_chain(&e))?;
            let params: Option<EnsembleParams> = match args.flags.get("params") {
                Some(json) => Some(serde_json::from_str(json).map_err(|e| format!("bad --params: {e}"))?),
                None => None,
            };
            let make = || -> AnyDetector {
                match &params {
                    Some(p) => AnyDetector::Default(EnsembleDetector::with_params(p.clone(), sensitivity)),
                    None => registry::build(&detector, sensitivity)
                        .unwrap_or_else(|_| AnyDetector::Default(EnsembleDetector::new(sensitivity))),
                }
            };
            let cad_params: CadOseParams = match args.flags.get("cad-params") {
                Some(json) => serde_json::from_str(json).map_err(|e| format!("bad --cad-params: {e}"))?,
                None => CadOseParams::default(),
            };
            let scored = match params {
                Some(_) => detect_corpus(&corpus, make),
                None => scored_by_spec(&corpus, &detector, sensitivity, &cad_params)?,
            };
            let scores: Vec<ProfileScore> = Profile::nab_profiles().iter().map(|p| score_corpus(&scored, p)).collect();
            print_scores(&scores, args.flags.contains_key("files"));
            print_splits(&corpus, &scored);
            if let Some(dir) = args.flags.get("dump") {
                for scored_file in &scored {
                    let path = PathBuf::from(dir).join(&scored_file.rel_path);
                    if let Some(parent) = path.parent() {
                        std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
                    }
                    let text: String = scored_file.scores.iter().map(|s| format!("{s}\n")).collect();
                    std::fs::write(&path, format!("anomaly_score\n{text}")).map_err(|e| e.to_string())?;
                }
                println!("threshold_std {}", scores[0].threshold);
            }
            if args.flags.contains_key("explain") {
                // Which channel produced each detection at the standard threshold.
                let threshold = scores[0].threshold;
                let mut fp_by: BTreeMap<&str, usize> = BTreeMap::new();
                let mut tp_by: BTreeMap<&str, usize> = BTreeMap::new();
                for file in &corpus {
                    let mut detector = EnsembleDetector::with_params(params.clone().unwrap_or_default(), sensitivity);
                    let probation = mend_nab::probationary_rows(file.data.rows.len());
                    let mut hit = vec![false; file.windows.len()];
                    for (row_idx, row) in file.data.rows.iter().enumerate() {
                        use mend_detect::Detector;
                        let score =
                            detector.update(mend_detect::Point::new(row.timestamp.as_secs_f64(), row.value)).value();
                        if row_idx < probation || score < threshold {
                            continue;
                        }
                        let ch = detector.last_channels();
                        let best = if ch.extreme >= ch.rarity.max(ch.seasonal) {
                            "extreme"
                        } else if ch.rarity >= ch.seasonal {
                            "rarity"
                        } else {
                            "seasonal"
                        };
                        let window = file.windows.iter().position(|&(l, r)| (l..=r).contains(&row_idx));
                        match window {
                            Some(w) if !hit[w] => {
                                hit[w] = true;
                                *tp_by.entry(best).or_default() += 1;
                                println!("  TP {:<50} row {row_idx:>6} score {score:.3} {best}", file.data.rel_path());
                            }
                            Some(_) => {}
                            None => {
                                *fp_by.entry(best).or_default() += 1;
                                println!("  FP {:<50} row {row_idx:>6} score {score:.3} {best}", file.data.rel_path());
                            }
                        }
                    }
                }
                println!("first hits by channel {tp_by:?}\nfalse positives by channel {fp_by:?}");
            }
            if args.flags.contains_key("windows") {
                let threshold = scores[0].threshold;
                for (file, scored_file) in corpus.iter().zip(&scored) {
                    for &(first, last) in &file.windows {
                        let (best_idx, best) = (first..=last)
                            .map(|i| (i, scored_file.scores[i]))
                            .fold((first, f64::MIN), |acc, cur| if cur.1 > acc.1 { cur } else { acc });
                        let first_hit = (first..=last).find(|&i| scored_file.scores[i] >= threshold);
                        println!(
                            "  {:<55} [{first},{last}] max {best:.3} at +{:.2}  first hit {}",
                            file.data.rel_path(),
                            (best_idx - first) as f64 / (last - first + 1) as f64,
                            first_hit.map_or("-".to_owned(), |i| format!(
                                "+{:.2}",
                                (i - first) as f64 / (last - first + 1) as f64
                            ))
                        );
                    }
                }
            }
            if let Some(pattern) = args.flags.get("trace") {
                let threshold = scores[0].threshold;
                for (file, scored_file) in
                    corpus.iter().zip(&scored).filter(|(f, _)| f.data.rel_path().contains(pattern.as_str()))
                {
                    let probation = mend_nab::probationary_rows(file.data.rows.len());
                    println!(
                        "{} rows {} probation {} windows {:?}",
                        file.data.rel_path(),
                        file.data.rows.len(),
                        probation,
                        file.windows
                    );
                    for (row_idx, &score) in scored_file.scores.iter().enumerate().skip(probation) {
                        if score >= threshold.min(0.999) * 0.8 {
                            let inside = file.windows.iter().any(|&(l, r)| (l..=r).contains(&row_idx));
                            println!(
                                "  row {row_idx:>6} score {score:.4} value {} {}",
                                file.data.rows[row_idx].value,
                                if inside { "IN" } else { "" }
                            );
                        }
                    }
                }
            }
        }
        "cv" => {
            // The out-of-sample score: choose (candidate, threshold) on each fold's training files, score its
            // held-out files at that choice.
            let corpus = load_labelled_corpus(&data, &labels).map_err(|e| error_chain(&e))?;
            let mut candidates = Vec::new();
            if let Some(dir) = args.flags.get("results") {
                // Stored results (NAB's layout): one candidate per --detector name, comma-separated.
                for name in detector.split(',') {
                    let scored =
                        mend_nab::read_results(&corpus, &PathBuf::from(dir), name).map_err(|e| error_chain(&e))?;
                    candidates.push(Candidate { label: name.to_owned(), scored });
                }
            } else {
                // --params: the default detector with these parameters instead of its own.
                let params: Option<EnsembleParams> = match args.flags.get("params") {
                    Some(json) => Some(serde_json::from_str(json).map_err(|e| format!("bad --params: {e}"))?),
                    None => None,
                };
                let cad_params: CadOseParams = match args.flags.get("cad-params") {
                    Some(json) => serde_json::from_str(json).map_err(|e| format!("bad --cad-params: {e}"))?,
                    None => CadOseParams::default(),
                };
                // One candidate per comma-separated --detector spec (`--each` pairs each with the first).
                for spec in detector.split(',') {
                    let scored = match (&params, spec) {
                        (Some(p), "default") => detect_corpus(&corpus, || {
                            AnyDetector::Default(EnsembleDetector::with_params(p.clone(), sensitivity))
                        }),
                        _ => scored_by_spec(&corpus, spec, sensitivity, &cad_params)?,
                    };
                    let label = match (args.flags.get("params"), spec) {
                        (Some(json), "default") => json.clone(),
                        _ => spec.to_owned(),
                    };
                    candidates.push(Candidate { label, scored });
                }
                // --grid: parameter sets of the default detector to choose among as well.
                if let Some(grid) = args.flags.get("grid") {
                    let grid = std::fs::read_to_string(grid).map_err(|e| e.to_string())?;
                    for line in grid.lines().filter(|l| !l.trim().is_empty()) {
                        let params: EnsembleParams =
                            serde_json::from_str(line).map_err(|e| format!("bad grid line {line}: {e}"))?;
                        let scored = detect_corpus(&corpus, || {
                            AnyDetector::Default(EnsembleDetector::with_params(params.clone(), sensitivity))
                        });
                        candidates.push(Candidate { label: line.to_owned(), scored });
                    }
                }
            }
            if args.flags.contains_key("alarm") {
                // Every candidate scored by its alarm decision alone: the threshold is the detector's own.
                if args.flags.contains_key("results") {
                    return Err(
                        "--alarm scores mend detectors (their alarm level is 0.5); stored results have none".to_owned()
                    );
                }
                for candidate in &mut candidates {
                    alarm_decisions(&mut candidate.scored, ALARM_SCORE);
                }
            }
            let repeats: usize = flag("repeats", "50").parse().map_err(|_| "bad --repeats")?;
            let seed: u64 = flag("seed", "1").parse().map_err(|_| "bad --seed")?;
            let fraction: f64 = flag("test-fraction", "0.333").parse().map_err(|_| "bad --test-fraction")?;
            let categories: Vec<&str> = corpus.iter().map(|f| f.data.category.as_str()).collect();
            let splits = stratified_splits(&categories, repeats, fraction, seed);
            let loco = leave_one_category_out(&categories);
            println!(
                "{} files, {} windows; candidates: {}; {repeats} stratified splits holding out {:.0} % of each category (seed {seed}), and leave-one-category-out",
                corpus.len(),
                corpus.iter().map(|f| f.windows.len()).sum::<usize>(),
                candidates.len(),
                fraction * 100.0
            );
            if args.flags.contains_key("each") {
                // Each candidate on its own (only its threshold tuned per fold), paired with the first.
                let profile = Profile::standard();
                let strict = |candidate: &Candidate, folds: &[mend_nab::crossval::Fold]| -> Vec<f64> {
                    cross_validate(std::slice::from_ref(candidate), folds, &profile)
                        .iter()
                        .map(|o| o.test_score.unwrap_or(f64::NAN))
                        .collect()
                };
                let base_splits = strict(&candidates[0], &splits);
                let base_loco = strict(&candidates[0], &loco);
                println!(
                    "standard: dev | splits mean ± sd | paired diff vs first ± sd | by category mean | diff | candidate"
                );
                for candidate in &candidates {
                    let dev = score_corpus(&candidate.scored, &profile).normalized_score;
                    let on_splits = strict(candidate, &splits);
                    let on_loco = strict(candidate, &loco);
                    let diff = |a: &[f64], b: &[f64]| -> Vec<f64> {
                        a.iter().zip(b).map(|(x, y)| x - y).filter(|d| d.is_finite()).collect()
                    };
                    let finite = |v: &[f64]| -> Vec<f64> { v.iter().copied().filter(|x| x.is_finite()).collect() };
                    let splits_spread = Spread::of(&on_splits).ok_or("no split")?;
                    let paired = Spread::of(&diff(&on_splits, &base_splits)).ok_or("no split")?;
                    let loco_spread = Spread::of(&finite(&on_loco)).ok_or("no category")?;
                    let loco_diff = Spread::of(&diff(&on_loco, &base_loco)).ok_or("no category")?;
                    println!(
                        "{dev:6.2} | {:6.2} ± {:4.2} | {:+5.2} ± {:4.2} | {:6.2} | {:+5.2} | {}",
                        splits_spread.mean,
                        splits_spread.std,
                        paired.mean,
                        paired.std,
                        loco_spread.mean,
                        loco_diff.mean,
                        candidate.label
                    );
                }
                return Ok(());
            }
            let fmt = |spread: Option<Spread>| {
                spread.map_or("-".to_owned(), |s| {
                    format!("{:6.2} ± {:5.2} ({:6.2} … {:6.2})", s.mean, s.std, s.min, s.max)
                })
            };
            for profile in Profile::nab_profiles() {
                let development = candidates
                    .iter()
                    .map(|c| score_corpus(&c.scored, &profile).normalized_score)
                    .fold(f64::MIN, f64::max);
                let outcomes = cross_validate(&candidates, &splits, &profile);
                let strict: Vec<f64> = outcomes.iter().filter_map(|o| o.test_score).collect();
                let own: Vec<f64> = outcomes.iter().filter_map(|o| o.test_score_own_threshold).collect();
                let loco_outcomes = cross_validate(&candidates, &loco, &profile);
                let loco_strict: Vec<f64> = loco_outcomes.iter().filter_map(|o| o.test_score).collect();
                let loco_own: Vec<f64> = loco_outcomes.iter().filter_map(|o| o.test_score_own_threshold).collect();
                println!("{}", profile.name);
                println!("  development (tuned and scored on all files)      {development:6.2}");
                println!("  splits, held-out files at the training threshold {}", fmt(Spread::of(&strict)));
                println!("  splits, held-out files at their own threshold    {}", fmt(Spread::of(&own)));
                println!("  by category, at the training threshold          {}", fmt(Spread::of(&loco_strict)));
                println!("  by category, at their own threshold             {}", fmt(Spread::of(&loco_own)));
                for outcome in &loco_outcomes {
                    let score = |s: Option<f64>| s.map_or("     -".to_owned(), |s| format!("{s:6.2}"));
                    println!(
                        "    {:<34} {} (own threshold {})  windows {:>2}  false positives {:>3}  threshold {:.4}  {}",
                        outcome.fold,
                        score(outcome.test_score),
                        score(outcome.test_score_own_threshold),
                        outcome.test_windows,
                        outcome.test_false_positives,
                        outcome.threshold,
                        candidates[outcome.chosen].label
                    );
                }
                if candidates.len() > 1 {
                    let mut chosen: BTreeMap<&str, usize> = BTreeMap::new();
                    for outcome in &outcomes {
                        *chosen.entry(candidates[outcome.chosen].label.as_str()).or_default() += 1;
                    }
                    println!("  chosen on the splits: {chosen:?}");
                }
            }
        }
        "sweep" => {
            // One EnsembleParams JSON per line of --grid; one compact result line each.
            let corpus = load_labelled_corpus(&data, &labels).map_err(|e| error_chain(&e))?;
            let grid = std::fs::read_to_string(flag("grid", "grid.jsonl")).map_err(|e| e.to_string())?;
            for line in grid.lines().filter(|l| !l.trim().is_empty()) {
                let params: EnsembleParams =
                    serde_json::from_str(line).map_err(|e| format!("bad grid line {line}: {e}"))?;
                let scored = detect_corpus(&corpus, || {
                    AnyDetector::Default(EnsembleDetector::with_params(params.clone(), sensitivity))
                });
                let s: Vec<f64> =
                    Profile::nab_profiles().iter().map(|p| score_corpus(&scored, p).normalized_score).collect();
                let (a, b) = split_scores(&corpus, &scored);
                println!("{:6.2} {:6.2} {:6.2} | A {:6.2} B {:6.2} | {line}", s[0], s[1], s[2], a, b);
            }
        }
        "robust" => {
            // Tune on one part of the corpus (best standard score over the --grid configs), report on the rest.
            let corpus = load_labelled_corpus(&data, &labels).map_err(|e| error_chain(&e))?;
            let grid = std::fs::read_to_string(flag("grid", "grid.jsonl")).map_err(|e| e.to_string())?;
            let configs: Vec<(String, Vec<ScoredFile>)> = grid
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|line| {
                    let params: EnsembleParams =
                        serde_json::from_str(line).map_err(|e| format!("bad grid line {line}: {e}"))?;
                    let scored = detect_corpus(&corpus, || {
                        AnyDetector::Default(EnsembleDetector::with_params(params.clone(), sensitivity))
                    });
                    Ok((line.to_owned(), scored))
                })
                .collect::<Result<_, String>>()?;
            let default_idx = configs
                .iter()
                .position(|(line, _)| line.trim() == "{}")
                .ok_or("the grid must contain the default {}")?;
            let score_on = |scored: &[ScoredFile], keep: &dyn Fn(&str) -> bool| -> f64 {
                subset_score(scored, |f| keep(&f.rel_path)).normalized_score
            };
            let tune = |keep: &dyn Fn(&str) -> bool| -> usize {
                let mut best = (f64::MIN, 0);
                for (idx, (_, scored)) in configs.iter().enumerate() {
                    let score = score_on(scored, keep);
                    if score > best.0 {
                        best = (score, idx);
                    }
                }
                best.1
            };
            let half_a = half_a(&corpus);
            let in_a = |p: &str| half_a.contains(p);
            let in_b = |p: &str| !half_a.contains(p);
            for (name, train, test) in
                [("A->B", &in_a as &dyn Fn(&str) -> bool, &in_b as &dyn Fn(&str) -> bool), ("B->A", &in_b, &in_a)]
            {
                let best = tune(train);
                println!(
                    "{name}: tuned on train {:.2}, on test {:.2} (default on test {:.2}) with {}",
                    score_on(&configs[best].1, train),
                    score_on(&configs[best].1, test),
                    score_on(&configs[default_idx].1, test),
                    configs[best].0
                );
            }
            let categories: std::collections::BTreeSet<String> =
                corpus.iter().map(|f| f.data.category.clone()).collect();
            for category in categories {
                let prefix = format!("{category}/");
                let train = |p: &str| !p.starts_with(&prefix);
                let test = |p: &str| p.starts_with(&prefix);
                let best = tune(&train);
                // A category without windows cannot be normalised: report its raw standard score.
                let raw = |scored: &[ScoredFile]| subset_score(scored, |f| test(&f.rel_path));
                let tuned = raw(&configs[best].1);
                let default = raw(&configs[default_idx].1);
                println!(
                    "LOCO {category:<22} tuned-without: test {:>7.2} (raw {:>7.3})  default: test {:>7.2} (raw {:>7.3})  all-files score of tuned {:.2}  {}",
                    tuned.normalized_score,
                    tuned.raw_score,
                    default.normalized_score,
                    default.raw_score,
                    score_on(&configs[best].1, &|_| true),
                    configs[best].0
                );
            }
        }
        other => return Err(format!("unknown command {other:?}")),
    }
    Ok(())
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

fn print_scores(scores: &[ProfileScore], per_file: bool) {
    for score in scores {
        println!(
            "{:<20} score {:>7.2}  threshold {:.6}  raw {:>8.3}  TP {} FP {} FN {} TN {}",
            score.profile,
            score.normalized_score,
            score.threshold,
            score.raw_score,
            score.counts.tp,
            score.counts.fp,
            score.counts.fn_,
            score.counts.tn
        );
    }
    let Some(standard) = scores.iter().find(|s| s.profile == "standard") else {
        return;
    };
    if per_file {
        for file in &standard.files {
            println!(
                "  {:<60} {:>7.3}  windows {}/{}  fp {}",
                file.rel_path, file.raw_score, file.n_windows_detected, file.n_windows, file.n_false_positives
            );
        }
    }
    let mut by_category: BTreeMap<&str, (f64, usize, usize, usize)> = BTreeMap::new();
    for file in &standard.files {
        let category = file.rel_path.split('/').next().unwrap_or("");
        let entry = by_category.entry(category).or_default();
        entry.0 += file.raw_score;
        entry.1 += file.n_windows_detected;
        entry.2 += file.n_windows;
        entry.3 += file.n_false_positives;
    }
    for (category, (raw, detected, windows, fps)) in by_category {
        println!("  {category:<24} raw {raw:>8.3}  windows {detected}/{windows}  fp {fps}");
    }
}

/// Standard score of a subset of files, threshold optimised on that subset alone.
fn subset_score(scored: &[ScoredFile], keep: impl Fn(&ScoredFile) -> bool) -> ProfileScore {
    let subset: Vec<ScoredFile> = scored.iter().filter(|f| keep(f)).cloned().collect();
    score_corpus(&subset, &Profile::standard())
}

fn split_scores(corpus: &[LabelledFile], scored: &[ScoredFile]) -> (f64, f64) {
    let half_a = half_a(corpus);
    let a = subset_score(scored, |f| half_a.contains(&f.rel_path));
    let b = subset_score(scored, |f| !half_a.contains(&f.rel_path));
    (a.normalized_score, b.normalized_score)
}

fn half_a(corpus: &[LabelledFile]) -> std::collections::BTreeSet<String> {
    let mut half_a = std::collections::BTreeSet::new();
    let mut per_category: BTreeMap<&str, usize> = BTreeMap::new();
    for file in corpus {
        let counter = per_category.entry(file.data.category.as_str()).or_default();
        if counter.is_multiple_of(2) {
            half_a.insert(file.data.rel_path());
        }
        *counter += 1;
    }
    half_a
}

fn print_splits(corpus: &[LabelledFile], scored: &[ScoredFile]) {
    // Split A/B: alternate files within each category (sorted order), so both halves see every category.
    let half_a = half_a(corpus);
    let a = subset_score(scored, |f| half_a.contains(&f.rel_path));
    let b = subset_score(scored, |f| !half_a.contains(&f.rel_path));
    println!(
        "split A {:.2} (W {})  split B {:.2} (W {})",
        a.normalized_score, a.n_windows, b.normalized_score, b.n_windows
    );
    let categories: std::collections::BTreeSet<&str> = corpus.iter().map(|f| f.data.category.as_str()).collect();
    let mut line = String::from("leave-one-category-out (standard, rest):");
    for category in categories {
        let rest = subset_score(scored, |f| !f.rel_path.starts_with(&format!("{category}/")));
        line.push_str(&format!(" {}={:.1}", category.trim_start_matches("real"), rest.normalized_score));
    }
    println!("{line}");
}

/// Scores of every file of `corpus` under detector spec `spec` (see the module docs).
fn scored_by_spec(
    corpus: &[LabelledFile],
    spec: &str,
    sensitivity: Sensitivity,
    cad_params: &CadOseParams,
) -> Result<Vec<ScoredFile>, String> {
    // Each spec is run once per process: `a,a+b` runs `a` once.
    static MEMO: std::sync::Mutex<BTreeMap<String, Vec<ScoredFile>>> = std::sync::Mutex::new(BTreeMap::new());
    if let Some(scored) = MEMO.lock().ok().and_then(|memo| memo.get(spec).cloned()) {
        return Ok(scored);
    }
    let scored = scored_by_spec_uncached(corpus, spec, sensitivity, cad_params)?;
    if let Ok(mut memo) = MEMO.lock() {
        memo.insert(spec.to_owned(), scored.clone());
    }
    Ok(scored)
}

fn scored_by_spec_uncached(
    corpus: &[LabelledFile],
    spec: &str,
    sensitivity: Sensitivity,
    cad_params: &CadOseParams,
) -> Result<Vec<ScoredFile>, String> {
    if let Some(inner) = spec.strip_prefix("alarm:") {
        // The alarm decision as the score: 1 at or above 0.5, else 0 (no threshold left to choose).
        let mut scored = scored_by_spec(corpus, inner, sensitivity, cad_params)?;
        alarm_decisions(&mut scored, ALARM_SCORE);
        return Ok(scored);
    }
    if let Some((first, rest)) = spec.split_once('+') {
        let mut combined = scored_by_spec(corpus, first, sensitivity, cad_params)?;
        let other = scored_by_spec(corpus, rest, sensitivity, cad_params)?;
        for (file, other_file) in combined.iter_mut().zip(&other) {
            for (score, &other_score) in file.scores.iter_mut().zip(&other_file.scores) {
                *score = score.max(other_score);
            }
        }
        return Ok(combined);
    }
    Ok(match spec {
        "cad_ose_unbounded" => unbounded_cad_ose(corpus, None, false, 0.0),
        "cad_ose_unbounded_online" => unbounded_cad_ose(corpus, Some(cad_params.rest_points), true, 0.0),
        "cad_ose_unbounded_headroom" => unbounded_cad_ose(corpus, Some(cad_params.rest_points), true, 0.5),
        "cad_ose" => {
            detect_corpus(corpus, || AnyDetector::CadOse(CadOseDetector::with_params(cad_params.clone(), sensitivity)))
        }
        "cad_ose_known_range" => corpus
            .iter()
            .map(|file| {
                let values = file.data.rows.iter().map(|row| row.value);
                let min = values.clone().fold(f64::INFINITY, f64::min);
                let max = values.fold(f64::NEG_INFINITY, f64::max);
                let mut detector =
                    AnyDetector::CadOse(CadOseDetector::with_known_range(cad_params.clone(), sensitivity, min, max));
                ScoredFile {
                    rel_path: file.data.rel_path(),
                    scores: mend_nab::detect_file(&mut detector, &file.data),
                    windows: file.windows.clone(),
                }
            })
            .collect(),
        name => {
            registry::build(name, sensitivity).map_err(|e| e.to_string())?;
            detect_corpus(corpus, || {
                registry::build(name, sensitivity)
                    .unwrap_or_else(|_| AnyDetector::Default(EnsembleDetector::new(sensitivity)))
            })
        }
    })
}

/// CAD OSE with NAB's unbounded memory and the file's range given up front (NAB's own setting), to measure
/// what the bounded, online [`CadOseDetector`] gives up. Facts as sorted ids (0..6 sensor facts, 6 + id the
/// neuron fact of context `id`); every step crosses every stored context, as NAB's does.
struct UnboundedCadOse {
    min_value: f64,
    max_value: f64,
    /// The range widened by each value (as `cad_ose`) instead of given.
    online: bool,
    /// Online only: quantise over the range seen widened by this share of it on each side, and re-quantise
    /// only when a value falls outside that (0: the range seen, re-quantised at every new extreme).
    headroom: f64,
    /// The lowest value of level 0.
    low: f64,
    step: f64,
    rest_points: usize,
    /// (left facts, right sensor mask, zero level, times active).
    contexts: Vec<(Vec<u32>, u8, bool, u64)>,
    index: std::collections::HashMap<(Vec<u32>, u8), usize>,
    left_facts: Vec<u32>,
    n_steps: usize,
    last_high_step: usize,
}

impl UnboundedCadOse {
    fn new(min_value: f64, max_value: f64, rest_points: usize, online: bool) -> Self {
        let range = max_value - min_value;
        Self {
            min_value,
            max_value,
            online,
            headroom: 0.0,
            low: min_value,
            step: if range > 0.0 { range / 7.0 } else { 1.0 },
            rest_points,
            contexts: Vec::new(),
            index: std::collections::HashMap::new(),
            left_facts: Vec::new(),
            n_steps: 0,
            last_high_step: 0,
        }
    }

    fn insert(&mut self, left: Vec<u32>, right: u8, zero_level: bool) -> Option<usize> {
        if let Some(&id) = self.index.get(&(left.clone(), right)) {
            if zero_level {
                self.contexts[id].2 = true;
            }
            return None;
        }
        let id = self.contexts.len();
        self.index.insert((left.clone(), right), id);
        self.contexts.push((left, right, zero_level, 0));
        Some(id)
    }

    fn update(&mut self, x: f64) -> f64 {
        if self.online {
            self.min_value = self.min_value.min(x);
            self.max_value = self.max_value.max(x);
            let outside = !(self.low..=self.low + 7.0 * self.step).contains(&x);
            if self.headroom == 0.0 || outside || self.n_steps == 0 {
                let range = self.max_value - self.min_value;
                self.low = self.min_value - self.headroom * range;
                let span = range * (1.0 + 2.0 * self.headroom);
                self.step = if span > 0.0 { span / 7.0 } else { 1.0 };
            }
        }
        let level = ((x - self.low) / self.step).floor().clamp(0.0, 7.0) as u32;
        let sensors: u8 = (0..3).fold(0, |mask, bit| mask | 1 << (2 * bit + ((level >> bit) & 1)));
        let previous = std::mem::take(&mut self.left_facts);
        let mut proposed: Vec<(Vec<u32>, u8)> = Vec::new();
        let mut new_zero_level = None;
        let mut n_new = 0usize;
        if !previous.is_empty() {
            proposed.push((previous.clone(), sensors));
            new_zero_level = self.insert(previous.clone(), sensors, true);
            n_new += usize::from(new_zero_level.is_some());
        }
        let mut n_selected = 0usize;
        let mut active: Vec<(u64, usize)> = Vec::new();
        for (id, context) in self.contexts.iter_mut().enumerate() {
            if Some(id) == new_zero_level {
                continue;
            }
            let left_crossed: Vec<u32> =
                context.0.iter().copied().filter(|f| previous.binary_search(f).is_ok()).collect();
            if left_crossed.is_empty() {
                continue;
            }
            let right_crossed = context.1 & sensors;
            if left_crossed.len() == context.0.len() {
                n_selected += 1;
                if right_crossed != 0 {
                    if right_crossed == context.1 {
                        context.3 += 1;
                        active.push((context.3, id));
                    } else if context.2 {
                        proposed.push((left_crossed, right_crossed));
                    }
                }
            } else if context.2 && right_crossed != 0 && left_crossed.len() <= 7 {
                proposed.push((left_crossed, right_crossed));
            }
        }
        let predicted = if n_selected > 0 { active.len() as f64 / n_selected as f64 } else { 0.0 };
        active.sort_unstable_by(|a, b| b.cmp(a));
        active.truncate(15);
        let mut next: Vec<u32> = (0..6).filter(|bit| sensors & (1 << bit) != 0).collect();
        next.extend(active.iter().map(|&(_, id)| 6 + id as u32));
        next.sort_unstable();
        self.left_facts = next;
        proposed.sort_unstable();
        proposed.dedup();
        let n_proposed = proposed.len();
        for (left, right) in proposed {
            if self.insert(left, right, false).is_some() {
                n_new += 1;
            }
        }
        let novel = if n_proposed > 0 { n_new as f64 / n_proposed as f64 } else { 0.0 };
        let raw = ((1.0 - predicted + novel) / 2.0).clamp(0.0, 1.0);
        self.n_steps += 1;
        let resting = self.n_steps - self.last_high_step <= self.rest_points;
        if raw >= 0.75 {
            self.last_high_step = self.n_steps;
        }
        if resting { 0.0 } else { raw }
    }
}

/// [`UnboundedCadOse`] over every file, with NAB's rest period (probation / 5) unless `rest_points` is given.
fn unbounded_cad_ose(
    corpus: &[LabelledFile],
    rest_points: Option<u32>,
    online: bool,
    headroom: f64,
) -> Vec<ScoredFile> {
    corpus
        .iter()
        .map(|file| {
            let values: Vec<f64> = file.data.rows.iter().map(|row| row.value).collect();
            let min = values.iter().copied().fold(f64::INFINITY, f64::min);
            let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let rest = rest_points.map_or(mend_nab::probationary_rows(values.len()) / 5, |r| r as usize);
            let mut detector = if online {
                let mut detector = UnboundedCadOse::new(f64::INFINITY, f64::NEG_INFINITY, rest, true);
                detector.headroom = headroom;
                detector
            } else {
                UnboundedCadOse::new(min, max, rest, false)
            };
            ScoredFile {
                rel_path: file.data.rel_path(),
                // The same output map as `cad_ose` (base threshold 0.75 at 0.5), so `+` combines like scales.
                scores: values
                    .iter()
                    .map(|&v| {
                        let raw = detector.update(v);
                        if raw <= 0.75 { 0.5 * raw / 0.75 } else { 0.5 + 0.5 * (raw - 0.75) / 0.25 }
                    })
                    .collect(),
                windows: file.windows.clone(),
            }
        })
        .collect()
}
