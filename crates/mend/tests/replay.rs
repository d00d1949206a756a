//! `mend replay`: recorded incidents from `../shared/rca` and from cases written here, malformed ones
//! included.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::MEND;

/// The Sock Shop cases live next to the repository (`../shared/rca`) on the team's machines and in CI.
/// A missing set fails the test rather than skipping it.
fn shared_rca() -> PathBuf {
    let rca = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/rca");
    assert!(rca.join("sock-shop/case-004/metrics.om").is_file(), "no RCA cases at {}", rca.display());
    rca
}

fn replay(args: &[&str], dir: &Path) -> Output {
    Command::new(MEND).arg("replay").arg(dir).args(args).output().expect("mend runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn replaying_a_shared_case_twice_gives_the_same_answer() {
    let case = shared_rca().join("sock-shop/case-004");
    let first = replay(&["--json"], &case);
    assert!(first.status.success(), "{}", stderr(&first));
    let second = replay(&["--json"], &case);
    assert_eq!(stdout(&first), stdout(&second));
    let line: serde_json::Value = serde_json::from_str(stdout(&first).trim()).expect("one JSON line");
    assert_eq!(line["id"], "sock-shop/case-004");
    // A cpu-stress on front-end: found by itself, minutes after the injection (08:44:39).
    assert_eq!(line["ranking"][0], "front-end", "{line}");
    let detected = line["detected_at"].as_str().expect("a detection time");
    assert!(detected.starts_with("2023-08-16T08:4"), "{line}");
    assert!(line["diagnosis"].is_string(), "{line}");
    // The text says which incident it reports, and how the label ranked.
    let text = replay(&[], &case);
    assert!(stdout(&text).contains("; reported"), "{}", stdout(&text));
    assert!(stdout(&text).contains("label: front-end (cpu-stress): ranked 1"), "{}", stdout(&text));
}

/// The whole development set: the figures BENCHMARKS.md reports, within a margin, so that a change
/// that loses accuracy fails here first.
#[test]
fn the_development_set_keeps_its_accuracy() {
    let output = replay(&["--json"], &shared_rca());
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output).lines().count(), 46);
    let summary = stderr(&output);
    let overall: Vec<f64> = summary
        .lines()
        .find(|line| line.starts_with("overall"))
        .expect("an overall row")
        .split_whitespace()
        .skip(2)
        .map(|n| n.parse().expect("a number"))
        .collect();
    let (ac1, ac3, avg5) = (overall[0], overall[1], overall[2]);
    assert!(ac1 >= 0.74 && ac3 >= 0.76 && avg5 >= 0.77, "AC@1 {ac1}, AC@3 {ac3}, Avg@5 {avg5}:\n{summary}");
}

/// A case of three services over 70 minutes of minute samples; `db`'s CPU jumps for five minutes at
/// minute 60. `body` may replace the metrics file.
fn write_case(dir: &Path, name: &str, metrics: Option<&str>, case_json: Option<&str>) -> PathBuf {
    let case = dir.join(name);
    std::fs::create_dir_all(&case).expect("case dir");
    let start = 1_700_000_000_i64;
    let mut text = String::from("# TYPE cpu_usage_cores gauge\n");
    for (service, pod) in
        [("api", "api-7d9f8b6c5d-abcde"), ("db", "db-5f4e3d2c1b-fghij"), ("web", "web-6c5b4a3928-klmno")]
    {
        for minute in 0..70_i64 {
            let noise = ((minute * 7 + service.len() as i64) % 5) as f64 * 0.0001;
            let value = if service == "db" && (60..65).contains(&minute) { 0.8 } else { 0.002 + noise };
            text.push_str(&format!(
                "cpu_usage_cores{{service=\"{service}\",pod=\"{pod}\"}} {value} {}\n",
                start + minute * 60
            ));
        }
    }
    text.push_str("# EOF\n");
    if let Some(metrics) = metrics {
        text = metrics.to_owned();
    }
    std::fs::write(case.join("metrics.om"), text).expect("write metrics");
    let json = case_json.map(str::to_owned).unwrap_or_else(|| {
        format!(
            r#"{{"id": "synthetic/{name}", "system": "synthetic", "fault_type": "cpu-stress", "inject_time": {}, "root_cause_service": "db"}}"#,
            start + 59 * 60 + 30
        )
    });
    std::fs::write(case.join("case.json"), json).expect("write case.json");
    case
}

#[test]
fn malformed_cases_are_named_with_file_and_line_and_the_others_still_run() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_case(dir.path(), "a-good", None, None);
    let bad_value = "# TYPE cpu_usage_cores gauge\ncpu_usage_cores{service=\"db\",pod=\"db-1\"} 0.1 1700000000\n\
                     cpu_usage_cores{service=\"db\",pod=\"db-1\"} zero 1700000060\n# EOF\n";
    write_case(dir.path(), "b-bad-value", Some(bad_value), None);
    let no_time = "# TYPE cpu_usage_cores gauge\ncpu_usage_cores{service=\"db\",pod=\"db-1\"} 0.1 1700000000\n\
                   cpu_usage_cores{service=\"db\",pod=\"db-1\"} 0.2\n# EOF\n";
    write_case(dir.path(), "c-no-timestamp", Some(no_time), None);
    let backwards = "# TYPE cpu_usage_cores gauge\ncpu_usage_cores{service=\"db\",pod=\"db-1\"} 0.1 1700000060\n\
                     cpu_usage_cores{service=\"db\",pod=\"db-1\"} 0.2 1700000000\n# EOF\n";
    write_case(dir.path(), "d-backwards", Some(backwards), None);
    write_case(dir.path(), "e-bad-json", None, Some("{\"id\": \"synthetic/e\",\n  \"system\": }"));
    let missing = write_case(dir.path(), "f-missing-metrics", None, None);
    std::fs::remove_file(missing.join("metrics.om")).expect("remove");
    write_case(dir.path(), "g-no-eof", Some("# TYPE x gauge\nx{service=\"db\"} 1 1700000000\n"), None);

    let output = replay(&["--json"], dir.path());
    assert_eq!(output.status.code(), Some(1), "a failed case fails the run");
    let errors = stderr(&output);
    let expected = [
        "b-bad-value/metrics.om:3:42: invalid value \"zero\"",
        "c-no-timestamp/metrics.om:3: sample of cpu_usage_cores has no timestamp",
        "d-backwards/metrics.om:3: sample of cpu_usage_cores at 2023-11-14T22:13:20.000Z is not after the series' \
         previous sample",
        "e-bad-json/case.json:2:13: ",
        "f-missing-metrics/metrics.om: missing (a case needs metrics.om and case.json)",
        "g-no-eof/metrics.om:3:1: ",
    ];
    for text in expected {
        assert!(errors.contains(text), "no {text:?} in:\n{errors}");
    }
    // The good case still ran, found db by itself, and the failed ones count as misses.
    let lines: Vec<serde_json::Value> =
        stdout(&output).lines().map(|line| serde_json::from_str(line).expect("JSON")).collect();
    assert_eq!(lines.len(), 1, "{}", stdout(&output));
    assert_eq!(lines[0]["id"], "synthetic/a-good");
    assert_eq!(lines[0]["ranking"][0], "db");
    assert!(errors.contains("7 cases (6 failed)"), "{errors}");
    let overall = errors.lines().find(|line| line.starts_with("overall")).expect("a score");
    // Six of the seven cases have labels to score against (the bad JSON has none readable): 1 hit of 6.
    assert_eq!(overall.split_whitespace().collect::<Vec<_>>(), ["overall", "6", "0.17", "0.17", "0.17"]);
}

#[test]
fn a_directory_without_cases_and_a_config_with_errors_are_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let output = replay(&[], dir.path());
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("no case directory"), "{}", stderr(&output));
    let case = write_case(dir.path(), "a", None, None);
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "[[detect]]\nname = \"x\"\nseries = \"up\"\ndetector = \"magic\"\n").expect("write");
    let output = replay(&["-c", config.to_str().expect("utf-8")], &case);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("bad.toml:4:12: detect[0].detector: unknown detector"), "{}", stderr(&output));
}

/// With a config, its services' `depends_on` form the graph: `web` depends on `api`, `api` on `db`;
/// all three move together, and `web` the most, yet `db` ranks first and the others are its victims.
#[test]
fn a_config_gives_the_graph_and_its_detectors() {
    let dir = tempfile::tempdir().expect("temp dir");
    let start = 1_700_000_000_i64;
    let mut text = String::from("# TYPE latency_p99_seconds gauge\n");
    // Noisier the deeper: web's baseline is the tightest, so its move is the loudest.
    for (service, base, slow, step) in [("api", 0.030, 1.5, 0.05), ("db", 0.005, 0.8, 0.1), ("web", 0.040, 2.0, 0.02)] {
        for minute in 0..70_i64 {
            let noise = 1.0 + ((minute * 7 + service.len() as i64) % 5) as f64 * step;
            let value = if minute >= 60 { slow * noise } else { base * noise };
            text.push_str(&format!("latency_p99_seconds{{service=\"{service}\"}} {value} {}\n", start + minute * 60));
        }
    }
    text.push_str("# EOF\n");
    let case = write_case(dir.path(), "chain", Some(&text), None);
    let config = dir.path().join("chain.toml");
    std::fs::write(
        &config,
        "[service.db]\ncommand = [\"true\"]\n\n[service.api]\ncommand = [\"true\"]\ndepends_on = [\"db\"]\n\n\
         [service.web]\ncommand = [\"true\"]\ndepends_on = [\"api\"]\n",
    )
    .expect("write");
    let without = replay(&["--json"], &case);
    let line: serde_json::Value = serde_json::from_str(stdout(&without).trim()).expect("JSON");
    assert_eq!(line["ranking"][0], "web", "without the graph the loudest victim leads: {line}");
    let with = replay(&["--json", "-c", config.to_str().expect("utf-8")], &case);
    assert!(with.status.success(), "{}", stderr(&with));
    let line: serde_json::Value = serde_json::from_str(stdout(&with).trim()).expect("JSON");
    assert_eq!(line["ranking"], serde_json::json!(["db", "api", "web"]), "{line}");
    let text = replay(&["-c", config.to_str().expect("utf-8")], &case);
    assert!(stdout(&text).contains("2. api  score"), "{}", stdout(&text));
    assert!(stdout(&text).contains("(explained by db)"), "{}", stdout(&text));
}
