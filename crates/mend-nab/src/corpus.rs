//! Reading NAB's data files, label windows and profiles from disk.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use crate::error::NabError;
use crate::scoring::Profile;
use crate::time::{Timestamp, parse_timestamp};

/// One data row, with the original text of its fields so results can echo them unchanged.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// The timestamp text as written.
    pub timestamp_text: String,
    /// The parsed timestamp.
    pub timestamp: Timestamp,
    /// The value text as written.
    pub value_text: String,
    /// The parsed value.
    pub value: f64,
}

/// One data file of the corpus.
#[derive(Clone, Debug, PartialEq)]
pub struct DataFile {
    /// Category directory name, e.g. `realTweets`.
    pub category: String,
    /// File name, e.g. `Twitter_volume_FB.csv`.
    pub name: String,
    /// The rows in input order.
    pub rows: Vec<Row>,
}

impl DataFile {
    /// The path relative to the data directory, with `/`, as used by the labels.
    pub fn rel_path(&self) -> String {
        format!("{}/{}", self.category, self.name)
    }
}

/// Lists `DIR/<category>/<file>.csv` as (category, file name), sorted by category then file name.
pub fn list_data_files(data_dir: &Path) -> Result<Vec<(String, String)>, NabError> {
    let mut files = Vec::new();
    for category in sorted_entries(data_dir)? {
        let category_path = data_dir.join(&category);
        if !category_path.is_dir() {
            continue;
        }
        for name in sorted_entries(&category_path)? {
            if name.ends_with(".csv") && category_path.join(&name).is_file() {
                files.push((category.clone(), name));
            }
        }
    }
    Ok(files)
}

fn sorted_entries(dir: &Path) -> Result<Vec<String>, NabError> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(NabError::io(dir))? {
        let entry = entry.map_err(NabError::io(dir))?;
        if let Some(name) = entry.file_name().to_str() {
            names.push(name.to_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// Reads one data file (`timestamp,value` header, then one row per line).
pub fn read_data_file(data_dir: &Path, category: &str, name: &str) -> Result<DataFile, NabError> {
    let path = data_dir.join(category).join(name);
    let text = fs::read_to_string(&path).map_err(NabError::io(&path))?;
    let rows = parse_data_csv(&text, &path)?;
    Ok(DataFile { category: category.to_owned(), name: name.to_owned(), rows })
}

/// Parses the text of a data file; errors carry the path and the 1-based line.
pub fn parse_data_csv(text: &str, path: &Path) -> Result<Vec<Row>, NabError> {
    let csv_error = |line: usize, message: String| NabError::Csv { path: path.to_path_buf(), line, message };
    let mut lines = text.lines().enumerate();
    match lines.next() {
        Some((_, header)) if header.trim_start_matches('\u{feff}').trim() == "timestamp,value" => {}
        Some((_, header)) => {
            return Err(csv_error(1, format!("expected header `timestamp,value`, found {header:?}")));
        }
        None => {
            return Err(csv_error(1, "empty file, expected header `timestamp,value`".to_owned()));
        }
    }
    let mut rows = Vec::new();
    for (line_idx, line) in lines {
        let line_no = line_idx + 1;
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let (timestamp_text, value_text) = line
            .split_once(',')
            .ok_or_else(|| csv_error(line_no, format!("expected `timestamp,value`, found {line:?}")))?;
        let timestamp = parse_timestamp(timestamp_text)
            .ok_or_else(|| csv_error(line_no, format!("invalid timestamp {timestamp_text:?}")))?;
        let value: f64 =
            value_text.trim().parse().map_err(|_| csv_error(line_no, format!("invalid value {value_text:?}")))?;
        rows.push(Row {
            timestamp_text: timestamp_text.to_owned(),
            timestamp,
            value_text: value_text.trim().to_owned(),
            value,
        });
    }
    Ok(rows)
}

/// Label windows as written in `combined_windows.json`: file path → list of `[start, end]` timestamps.
pub type RawWindows = BTreeMap<String, Vec<[String; 2]>>;

/// Reads `labels/combined_windows.json`.
pub fn read_windows(labels_file: &Path) -> Result<RawWindows, NabError> {
    let text = fs::read_to_string(labels_file).map_err(NabError::io(labels_file))?;
    serde_json::from_str(&text).map_err(|source| NabError::Json { path: labels_file.to_path_buf(), source })
}

/// Resolves timestamp windows to inclusive row ranges of `file` (README §2: each edge matches exactly one row).
pub fn resolve_windows(file: &DataFile, raw: &[[String; 2]], path: &Path) -> Result<Vec<(usize, usize)>, NabError> {
    let locate = |edge: &str| -> Result<usize, NabError> {
        let edge_error = || NabError::WindowEdge { path: path.to_path_buf(), timestamp: edge.to_owned() };
        let timestamp = parse_timestamp(edge).ok_or_else(edge_error)?;
        file.rows.iter().position(|row| row.timestamp == timestamp).ok_or_else(edge_error)
    };
    let mut windows = Vec::with_capacity(raw.len());
    for [start, end] in raw {
        let first = locate(start)?;
        let last = locate(end)?;
        if last < first {
            return Err(NabError::Invalid {
                path: path.to_path_buf(),
                message: format!("window [{start}, {end}] ends before it starts"),
            });
        }
        if let Some(&(_, previous_last)) = windows.last()
            && first <= previous_last
        {
            return Err(NabError::Invalid {
                path: path.to_path_buf(),
                message: format!("window [{start}, {end}] overlaps or precedes the previous one"),
            });
        }
        windows.push((first, last));
    }
    Ok(windows)
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawCostMatrix {
    tp_weight: f64,
    fp_weight: f64,
    fn_weight: f64,
}

#[derive(serde::Deserialize)]
struct RawProfile {
    #[serde(rename = "CostMatrix")]
    cost_matrix: RawCostMatrix,
}

/// Reads NAB's `config/profiles.json`; profiles come back sorted by name.
pub fn read_profiles(path: &Path) -> Result<Vec<Profile>, NabError> {
    let text = fs::read_to_string(path).map_err(NabError::io(path))?;
    let raw: BTreeMap<String, RawProfile> =
        serde_json::from_str(&text).map_err(|source| NabError::Json { path: path.to_path_buf(), source })?;
    Ok(raw
        .into_iter()
        .map(|(name, profile)| Profile {
            name,
            tp_weight: profile.cost_matrix.tp_weight,
            fp_weight: profile.cost_matrix.fp_weight,
            fn_weight: profile.cost_matrix.fn_weight,
        })
        .collect())
}

/// A data file with its resolved windows.
#[derive(Clone, Debug, PartialEq)]
pub struct LabelledFile {
    /// The data.
    pub data: DataFile,
    /// Inclusive row ranges of its windows.
    pub windows: Vec<(usize, usize)>,
}

/// Loads every data file under `data_dir` with its windows from `labels_file`.
///
/// A file missing from the labels is an error (NAB would not know how to score it).
pub fn load_labelled_corpus(data_dir: &Path, labels_file: &Path) -> Result<Vec<LabelledFile>, NabError> {
    let raw_windows = read_windows(labels_file)?;
    let mut corpus = Vec::new();
    for (category, name) in list_data_files(data_dir)? {
        let data = read_data_file(data_dir, &category, &name)?;
        let path: PathBuf = data_dir.join(&category).join(&name);
        let raw = raw_windows.get(&data.rel_path()).ok_or_else(|| NabError::Invalid {
            path: labels_file.to_path_buf(),
            message: format!("no entry for {}", data.rel_path()),
        })?;
        let windows = resolve_windows(&data, raw, &path)?;
        corpus.push(LabelledFile { data, windows });
    }
    Ok(corpus)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expected: Result<Vec<(&str, f64)>, &str>) {
        let got = parse_data_csv(text, Path::new("x.csv"))
            .map(|rows| rows.into_iter().map(|row| (row.timestamp_text, row.value)).collect::<Vec<_>>())
            .map_err(|err| err.to_string());
        let expected = expected
            .map(|rows| rows.into_iter().map(|(ts, v)| (ts.to_owned(), v)).collect::<Vec<_>>())
            .map_err(str::to_owned);
        assert_eq!(got, expected);
    }

    #[test]
    fn parses_rows_and_reports_file_and_line() {
        check(
            "timestamp,value\n2014-01-01 00:00:00,1.5\r\n2014-01-01 00:05:00,2\n",
            Ok(vec![("2014-01-01 00:00:00", 1.5), ("2014-01-01 00:05:00", 2.0)]),
        );
        check("timestamp,value\n", Ok(vec![]));
        check("", Err("x.csv:1: empty file, expected header `timestamp,value`"));
        check("time,value\n", Err("x.csv:1: expected header `timestamp,value`, found \"time,value\""));
        check(
            "timestamp,value\n2014-01-01 00:00:00,1\n2014-01-01 00:05:00,abc\n",
            Err("x.csv:3: invalid value \"abc\""),
        );
        check("timestamp,value\n2014-01-32 00:00:00,1\n", Err("x.csv:2: invalid timestamp \"2014-01-32 00:00:00\""));
        check(
            "timestamp,value\n2014-01-01 00:00:00\n",
            Err("x.csv:2: expected `timestamp,value`, found \"2014-01-01 00:00:00\""),
        );
    }

    #[test]
    fn resolves_windows_by_exact_timestamp() {
        let text = "timestamp,value\n2014-01-01 00:00:00,1\n2014-01-01 00:05:00,2\n2014-01-01 00:10:00,3\n";
        let rows = parse_data_csv(text, Path::new("x.csv")).expect("valid csv");
        let file = DataFile { category: "c".to_owned(), name: "x.csv".to_owned(), rows };
        let raw = [["2014-01-01 00:05:00.000000".to_owned(), "2014-01-01 00:10:00.000000".to_owned()]];
        assert_eq!(resolve_windows(&file, &raw, Path::new("x.csv")).expect("edges exist"), vec![(1, 2)]);
        let missing = [["2014-01-01 00:06:00.000000".to_owned(), "2014-01-01 00:10:00.000000".to_owned()]];
        let err = resolve_windows(&file, &missing, Path::new("x.csv")).expect_err("no such row");
        assert_eq!(err.to_string(), "x.csv: window edge 2014-01-01 00:06:00.000000 matches no row");
    }
}
