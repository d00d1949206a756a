//! Malformed expositions as files: each `tests/data/malformed/NAME.prom` (0.0.4) or `NAME.om` (OpenMetrics) must be
//! rejected with exactly the error in `NAME.prom.error` / `NAME.om.error`. `UPDATE_EXPECT=1` rewrites those files.

use std::path::Path;

use mend_promtext::{Format, Limits, parse_bytes};

/// Parses the file at `path` and compares the error text with `expected_path` (or writes it when updating).
fn check(path: &Path, expected_path: &Path, update: bool) -> Result<(), String> {
    let input = std::fs::read(path).map_err(|error| format!("{}: {error}", path.display()))?;
    let format =
        if path.extension().is_some_and(|extension| extension == "om") { Format::OpenMetrics } else { Format::Text };
    let actual = match parse_bytes(&input, format, &Limits::DEFAULT) {
        Ok(families) => format!("parsed {} families, expected an error", families.len()),
        Err(error) => error.to_string(),
    };
    if update {
        std::fs::write(expected_path, format!("{actual}\n")).map_err(|error| error.to_string())?;
        return Ok(());
    }
    let expected = std::fs::read_to_string(expected_path)
        .map_err(|error| format!("{}: {error} (run with UPDATE_EXPECT=1)", expected_path.display()))?;
    if actual == expected.trim_end() {
        Ok(())
    } else {
        Err(format!("{}:\n  expected: {}\n  actual:   {actual}", path.display(), expected.trim_end()))
    }
}

#[test]
fn malformed_fixtures_fail_with_their_expected_errors() {
    let update = std::env::var_os("UPDATE_EXPECT").is_some();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/malformed");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .expect("malformed fixtures directory exists")
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "prom" || extension == "om"))
        .collect();
    paths.sort();
    assert!(paths.len() >= 8, "fixtures missing from {}", dir.display());
    let failures: Vec<String> = paths
        .iter()
        .filter_map(|path| check(path, &path.with_extension(format!("{}.error", extension(path))), update).err())
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn extension(path: &Path) -> String {
    path.extension().map(|extension| extension.to_string_lossy().into_owned()).unwrap_or_default()
}
