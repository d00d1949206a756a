//! `mend gameday` end to end: the short version of the suite in `examples/gamedays/` that CI runs (crash,
//! hang, crash loop, overload, memory leak, dependency failure: real mend, real mend-demo replicas behind
//! the proxy, the built-in load; and Python's http.server and redis hanging), a
//! game day against a running mend with `hey` (a load generator we did not write) as its load, and a
//! scenario file with mistakes.
#![allow(clippy::disallowed_methods)] // End-to-end tests wait in real time.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{DEMO, Daemon, MEND, free_ports};
use serde_json::Value;

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/gamedays")
}

/// Runs `mend gameday FILE --out DIR --json`; returns the output and the JSON report.
fn gameday(file: &Path, out: &Path) -> (Output, Value) {
    // mend-demo is found next to the mend binary (target/debug): the configs name it bare.
    let output = Command::new(MEND).arg("gameday").arg(file).arg("--out").arg(out).arg("--json").output().expect("run");
    let report = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
    (output, report)
}

fn check_passes(name: &str) -> Value {
    let _cpu = common::cpu_to_myself();
    let out = tempfile::tempdir().expect("temp dir");
    let (output, report) = gameday(&examples().join(format!("{name}.toml")), out.path());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{name}: {report:#}\n{stderr}");
    assert_eq!(report["passed"], true);
    assert!(stderr.contains("fault: "), "progress while it runs: {stderr}");
    let html = std::fs::read_to_string(out.path().join(format!("{name}.html"))).expect("the HTML report");
    assert_eq!(html.matches("<svg ").count(), 3);
    assert!(!html.contains("<script"));
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join(format!("{name}.json"))).expect("json"))
            .expect("valid json");
    assert_eq!(json["faults"], report["faults"]);
    report
}

#[test]
fn crash_is_recovered_without_failed_requests() {
    let report = check_passes("crash");
    let fault = &report["faults"][0];
    assert_eq!((fault["diagnosis"].as_str(), fault["failed"].as_u64()), (Some("crashed"), Some(0)));
    assert!(fault["total"].as_u64() > Some(100), "under load: {fault}");
}

#[test]
fn hang_is_replaced_without_failed_requests() {
    let report = check_passes("hang");
    assert_eq!(report["faults"][0]["diagnosis"], "hung");
}

/// Programs mend did not write: Python's http.server stopped under load, then redis blocked in a command
/// (its process running, its port open, no answer), seen only by its exec probe.
#[test]
fn third_party_programs_that_hang_are_replaced_and_diagnosed_hung() {
    let report = check_passes("third-party");
    let faults = report["faults"].as_array().expect("faults");
    let seen: Vec<(&str, &str, bool)> = faults
        .iter()
        .map(|fault| {
            let injected = fault["injected"].as_bool().unwrap_or(false);
            (fault["service"].as_str().unwrap_or(""), fault["diagnosis"].as_str().unwrap_or(""), injected)
        })
        .collect();
    assert_eq!(seen, [("web", "hung", true), ("cache", "hung", true)], "{report:#}");
    assert_eq!(faults[0]["failed"].as_u64(), Some(0));
}

#[test]
fn a_crash_loop_escalates_instead_of_looping() {
    let report = check_passes("crashloop");
    let fault = &report["faults"][0];
    assert_eq!((fault["expect"].as_str(), fault["diagnosis"].as_str()), (Some("escalate"), Some("crash_loop")));
    assert!(fault["recover_s"].is_number(), "escalated: {fault}");
}

#[test]
fn an_overload_is_scaled_out_by_the_autoscaler_without_failed_requests() {
    let report = check_passes("overload");
    let fault = &report["faults"][0];
    assert_eq!((fault["expect"].as_str(), fault["failed"].as_u64()), (Some("scale out"), Some(0)));
    assert!(fault["recover_s"].as_f64().is_some_and(|at| at <= 10.0), "scaled out: {fault}");
    assert!(fault["actions"].to_string().contains("by autoscaler"), "the autoscaler's decisions: {fault}");
}

/// The actions a fault's report lists (`6.9s restart db by policy "dependency_failure" (step 1) (...)`).
fn actions(fault: &Value) -> Vec<&str> {
    fault["actions"].as_array().map(|list| list.iter().filter_map(Value::as_str).collect()).unwrap_or_default()
}

/// Issue 14: the memory forecast fires a few samples into a 16 MiB/s leak and its policy replaces the
/// replica, drained, before the supervisor would at the limit.
#[test]
fn a_memory_leak_is_healed_before_the_limit_without_failed_requests() {
    let report = check_passes("leak");
    let fault = &report["faults"][0];
    assert_eq!((fault["diagnosis"].as_str(), fault["failed"].as_u64()), (Some("memory_exhaustion"), Some(0)));
    let actions = actions(fault);
    assert!(
        actions.iter().any(|a| a.contains("restart web/0 by policy \"memory_exhaustion\"")),
        "the policy acted: {fault}"
    );
    assert!(!actions.iter().any(|a| a.contains("max_memory_bytes")), "healed before the limit, not at it: {fault}");
}

/// Issue 14: db fails in `frontend → api → db`; the `dependency_failure` policy restarts db (which
/// clears mend-demo's fault: it lives in the process), and api and frontend see no action (an SLO).
#[test]
fn a_dependency_failure_restarts_the_root_and_leaves_the_victims_alone() {
    let report = check_passes("chain");
    let fault = &report["faults"][0];
    let actions = actions(fault);
    assert!(
        actions.iter().any(|a| a.contains("restart db by policy \"dependency_failure\"")),
        "the root restarted: {fault}"
    );
    assert!(fault["recover_s"].is_number(), "recovered: {fault}");
}

/// A running mend (`[topology] api`), `hey` as the load command; the SLO that cannot hold (detect within
/// 1 ms) fails the run with exit 3 and says why.
#[test]
fn against_a_running_mend_with_an_external_load_and_a_failed_slo() {
    let _cpu = common::cpu_to_myself();
    let ports = free_ports(4);
    let proxy = ports + 3;
    let daemon = Daemon::start(&format!(
        "[api]\nlisten = \"{{api}}\"\n[service.web]\ncommand = [\"{{demo}}\", \"--port\", \"{{port}}\"]\nreplicas = 2\n\
         ports = \"{ports}-{last}\"\n[service.web.liveness]\nhttp = \"http://127.0.0.1:{{port}}/health\"\n\
         [service.web.proxy]\nlisten = \"127.0.0.1:{proxy}\"\n",
        last = ports + 2
    ));
    daemon.wait_ready("web");
    let dir = tempfile::tempdir().expect("temp dir");
    let scenario = dir.path().join("external.toml");
    std::fs::write(
        &scenario,
        format!(
            "duration = \"6s\"\n[topology]\napi = \"{api}\"\n[load]\ncommand = [\"hey\", \"-z\", \"5s\", \"-c\", \"2\", \"-q\", \"20\", \"http://127.0.0.1:{proxy}/\"]\n\
             [[fault]]\nat = \"2s\"\nservice = \"web\"\nkind = \"kill\"\n[slo]\ndetect = \"1ms\"\n",
            api = daemon.api
        ),
    )
    .expect("write scenario");
    let (output, report) = gameday(&scenario, dir.path());
    assert_eq!(output.status.code(), Some(3), "{report:#}\n{}", String::from_utf8_lossy(&output.stderr));
    let violations = report["faults"][0]["violations"].as_array().cloned().unwrap_or_default();
    assert!(violations.iter().any(|v| v.as_str().is_some_and(|v| v.starts_with("detected after"))), "{report:#}");
    let html = std::fs::read_to_string(dir.path().join("external.html")).expect("html");
    assert!(html.contains("Load command output") && html.contains("Summary:"), "hey's report is kept");
    // The running mend is left running.
    assert_eq!(common::get(daemon.api, "/healthz").status, 200);
    let _ = DEMO;
}

#[test]
fn a_scenario_with_mistakes_is_refused_with_file_line_and_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let scenario = dir.path().join("bad.toml");
    std::fs::write(&scenario, "duration = \"5s\"\n[topology]\nconfig = \"x.toml\"\n[load]\nurl = \"http://10.1.2.3:80/\"\n[[fault]]\nat = \"1s\"\nservice = \"web\"\nkind = \"explode\"\n")
        .expect("write");
    let (output, _) = gameday(&scenario, dir.path());
    assert_eq!(output.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let file = scenario.display();
    assert!(
        stderr.contains(&format!(
            "{file}:5:7: load.url: \"http://10.1.2.3:80/\": game days send traffic to loopback only"
        )),
        "{stderr}"
    );
    assert!(stderr.contains(&format!("{file}:9:8: fault[0].kind: unknown fault \"explode\"")), "{stderr}");
}
