//! The game day's measuring, as data: recordings in, per-fault results and SLO verdicts out.

use std::path::Path;

use super::*;

fn scenario(faults: &str, slo: &str) -> Scenario {
    let text = format!(
        "duration = \"20s\"\n[topology]\napi = \"127.0.0.1:7070\"\n[load]\nurl = \"http://127.0.0.1:7071/\"\n{faults}\n[slo]\n{slo}\n"
    );
    mend_config::parse_scenario("day.toml", &text, Path::new("/")).expect("valid scenario")
}

const KILL: &str = "[[fault]]\nat = \"5s\"\nservice = \"web\"\nkind = \"kill\"\nexpect_diagnosis = \"crashed\"\n";

fn ready(points: &[(f64, u32)]) -> Vec<ReadyPoint> {
    points.iter().map(|&(at, ready)| ReadyPoint { at, service: "web".into(), ready, desired: 2 }).collect()
}

fn samples(from: f64, to: f64, failing: &[f64]) -> Vec<Sample> {
    let mut out = Vec::new();
    let mut at = from;
    while at < to {
        out.push(Sample { at, latency_ms: 1.0, ok: !failing.iter().any(|f| (f - at).abs() < 1e-9) });
        at += 0.1;
        at = (at * 10.0).round() / 10.0;
    }
    out
}

fn recording() -> Recording {
    Recording {
        duration: 20.0,
        samples: samples(0.0, 20.0, &[5.1, 5.2]),
        ready: ready(&[(4.8, 2), (5.0, 2), (5.2, 1), (5.4, 1), (5.6, 2), (5.8, 2), (19.8, 2)]),
        notices: vec![Notice { at: 5.05, service: "web".into(), what: "exited: killed by SIGKILL".into() }],
        incidents: vec![IncidentSeen {
            id: "inc-1".into(),
            services: vec!["web".into()],
            opened: 5.1,
            diagnosis: "crashed".into(),
            root: Some("web".into()),
            diagnosed: Some(5.3),
            escalated: None,
            diagnoses: Vec::new(),
        }],
        actions: vec![ActionSeen { at: 5.2, service: "web".into(), what: "restart web/0 by mend (done)".into() }],
        injected: vec![Injected { at: 5.0, service: "web".into(), description: "killed web/0".into(), error: None }],
        readies: vec![(5.5, "web".into())],
        load_output: None,
    }
}

fn approx(value: Option<f64>) -> Option<String> {
    value.map(|v| format!("{v:.2}"))
}

#[test]
fn a_crash_is_measured_from_its_injection() {
    let results = evaluate(&scenario(KILL, "detect = \"1s\"\nrecover = \"2s\"\nright_diagnosis = true"), &recording());
    let result = &results[0];
    assert_eq!(approx(result.detect_s).as_deref(), Some("0.05"));
    assert_eq!(result.detected_by.as_deref(), Some("exited: killed by SIGKILL"));
    assert_eq!((result.diagnosis.as_deref(), result.right_diagnosis), (Some("crashed"), Some(true)));
    assert_eq!(approx(result.diagnose_s).as_deref(), Some("0.30"));
    // Ready again at 5.6 (the first full poll after the last short one), after the last failure (5.2).
    assert_eq!(approx(result.recover_s).as_deref(), Some("0.60"));
    // Between two polls: the replica's ready event after the last trouble noticed.
    let quick = Recording { ready: ready(&[(5.0, 2), (5.6, 2)]), samples: samples(0.0, 20.0, &[]), ..recording() };
    let results = evaluate(&scenario(KILL, ""), &quick);
    assert_eq!(approx(results[0].recover_s).as_deref(), Some("0.50"));
    assert_eq!((result.failed, result.total), (Some(2), Some(150)));
    assert_eq!(result.actions, ["0.2s restart web/0 by mend (done)"]);
    assert_eq!(result.violations, Vec::<String>::new());
}

#[test]
fn each_fault_is_credited_with_the_diagnosis_made_while_it_ran() {
    let faults = format!(
        "{KILL}[[fault]]\nat = \"10s\"\nservice = \"web\"\nkind = \"leak\"\nfor = \"5s\"\nexpect_diagnosis = \"memory_exhaustion\"\n"
    );
    // One incident outlives the crash and is diagnosed again when the leak starts.
    let mut both = recording();
    both.incidents[0].diagnosis = "memory_exhaustion".into();
    both.incidents[0].diagnosed = Some(12.5);
    let seen = |at: f64, name: &str| DiagnosisSeen { at, name: name.into(), root: Some("web".into()) };
    both.incidents[0].diagnoses = vec![seen(5.2, "unknown"), seen(5.3, "crashed"), seen(12.5, "memory_exhaustion")];
    both.injected.push(Injected { at: 10.0, service: "web".into(), description: "leak".into(), error: None });
    let results = evaluate(&scenario(&faults, "right_diagnosis = true"), &both);
    let named: Vec<(Option<&str>, Option<bool>, Option<String>)> = results
        .iter()
        .map(|result| (result.diagnosis.as_deref(), result.right_diagnosis, approx(result.diagnose_s)))
        .collect();
    assert_eq!(
        named,
        [
            (Some("crashed"), Some(true), Some("0.30".to_owned())),
            (Some("memory_exhaustion"), Some(true), Some("2.50".to_owned()))
        ]
    );
    // A fault elsewhere in between does not cut the diagnosis off: it is web's until web's next fault.
    let elsewhere = format!("{KILL}[[fault]]\nat = \"7s\"\nservice = \"api\"\nkind = \"kill\"\n");
    let mut late = recording();
    late.incidents[0].diagnoses = vec![seen(8.0, "crashed")];
    late.injected.push(Injected { at: 7.0, service: "api".into(), description: "kill".into(), error: None });
    let results = evaluate(&scenario(&elsewhere, "right_diagnosis = true"), &late);
    assert_eq!((results[0].right_diagnosis, approx(results[0].diagnose_s)), (Some(true), Some("3.00".to_owned())));
    // Without a history (an older daemon), the incident's last diagnosis goes to the fault it opened in.
    both.incidents[0].diagnoses.clear();
    let results = evaluate(&scenario(&faults, "right_diagnosis = true"), &both);
    assert_eq!(results[0].diagnosis.as_deref(), Some("memory_exhaustion"));
    assert_eq!(results[1].diagnosis, None);
}

#[test]
fn slos_that_fail_are_named() {
    let slo = "detect = \"10ms\"\nrecover = \"500ms\"\nfailed_requests = 0\nright_diagnosis = true";
    let mut wrong = recording();
    wrong.incidents[0].diagnosis = "hung".into();
    let results = evaluate(&scenario(KILL, slo), &wrong);
    assert_eq!(
        results[0].violations,
        [
            "detected after 0.05s (SLO 0.01s)",
            "recover after 0.60s (SLO 0.5s)",
            "2 failed requests (SLO 0)",
            "diagnosed hung (expected crashed)"
        ]
    );
    // Nothing noticed, nothing injected, never ready again.
    let mut nothing = recording();
    nothing.notices.clear();
    nothing.incidents.clear();
    nothing.injected[0].error = Some("409".into());
    nothing.ready = ready(&[(5.0, 2), (5.2, 1), (19.8, 1)]);
    let results = evaluate(&scenario(KILL, "detect = \"1s\"\nrecover = \"2s\""), &nothing);
    assert_eq!(results[0].violations, ["the fault could not be injected", "not detected", "did not recover"]);
}

#[test]
fn a_crash_loop_must_escalate_and_victims_must_stay_untouched() {
    let faults =
        "[[fault]]\nat = \"5s\"\nservice = \"web\"\nkind = \"kill\"\nexpect = \"escalate\"\nuntouched = [\"api\"]\n";
    let mut looped = recording();
    looped.incidents[0].escalated = Some(9.0);
    looped.actions.push(ActionSeen { at: 6.0, service: "api".into(), what: "restart api/0 by mend (done)".into() });
    let results = evaluate(&scenario(faults, "recover = \"3s\""), &looped);
    assert_eq!(approx(results[0].recover_s).as_deref(), Some("4.00"));
    assert_eq!(
        results[0].violations,
        ["escalate after 4.00s (SLO 3s)", "api was acted on (restart api/0 by mend (done)) though it is a victim"]
    );
}

#[test]
fn an_overload_must_scale_out_to_its_highest_count_all_ready() {
    let faults =
        "[[fault]]\nat = \"0s\"\nservice = \"web\"\nkind = \"run\"\ncommand = [\"true\"]\nexpect = \"scale_out\"\n";
    let point = |at: f64, ready: u32, desired: u32| ReadyPoint { at, service: "web".into(), ready, desired };
    let mut scaled = recording();
    scaled.notices.clear();
    scaled.readies.clear();
    scaled.samples = samples(0.0, 20.0, &[]);
    scaled.injected[0].at = 0.0;
    // Ready as soon as wanted at every poll (a crash's "recover" would say 0 s): 1 → 2 at 2 s, → 3 at 4 s.
    scaled.ready = vec![point(0.0, 1, 1), point(2.2, 2, 2), point(4.0, 2, 3), point(4.2, 3, 3), point(19.8, 3, 3)];
    let results = evaluate(&scenario(faults, "recover = \"10s\""), &scaled);
    assert_eq!(results[0].expect, "scale out");
    assert_eq!(approx(results[0].recover_s).as_deref(), Some("4.20"));
    assert!(results[0].violations.is_empty(), "{:?}", results[0].violations);
    // Never more than at the injection: it did not scale out.
    scaled.ready = vec![point(0.0, 1, 1), point(19.8, 1, 1)];
    let results = evaluate(&scenario(faults, "recover = \"10s\""), &scaled);
    assert_eq!(results[0].recover_s, None);
    assert_eq!(results[0].violations, ["did not scale out"]);
}

#[test]
fn the_report_escapes_and_is_self_contained() {
    let scenario = scenario(KILL, "");
    let mut recording = recording();
    recording.actions[0].what = "<script>alert(1)</script>".into();
    let results = evaluate(&scenario, &recording);
    let report = report::Report::new(&scenario, &recording, &results);
    let html = report.html();
    assert!(!html.contains("<script") && html.contains("&lt;script&gt;"));
    assert!(
        !html.contains("http://")
            || html.matches("http://").all(|_| html.contains("xmlns=\"http://www.w3.org/2000/svg\""))
    );
    assert!(!html.contains("src=") && !html.contains("href="));
    assert_eq!(html.matches("<svg ").count(), 3, "latency, error rate, replicas");
    let json: serde_json::Value = serde_json::from_str(&report.json()).expect("json");
    assert_eq!(json["faults"][0]["diagnosis"], "crashed");
    assert_eq!(json["passed"], true);
    assert_eq!(json["requests"], recording.samples.len());
    assert!(report.table().contains("every SLO held"));
    // An external load command's requests are not counted: not "0 requests, 0 failed".
    let text = format!(
        "duration = \"20s\"\n[topology]\napi = \"127.0.0.1:7070\"\n[load]\ncommand = [\"hey\", \"http://127.0.0.1:7071/\"]\n{KILL}"
    );
    let external = mend_config::parse_scenario("day.toml", &text, Path::new("/")).expect("valid scenario");
    let report = report::Report::new(&external, &recording, &results);
    let json: serde_json::Value = serde_json::from_str(&report.json()).expect("json");
    assert_eq!((json["requests"].is_null(), json["failed_requests"].is_null()), (true, true));
    let results = evaluate(&external, &recording);
    assert_eq!((results[0].failed, results[0].total), (None, None), "nor per fault");
    assert!(report.table().contains("requests not counted (no built-in load)"), "{}", report.table());
}

#[tokio::test]
async fn a_run_fault_is_injected_once_it_runs_and_is_stopped_at_its_end() {
    let argv = |args: &[&str]| args.iter().map(|arg| (*arg).to_owned()).collect::<Vec<String>>();
    let t0 = Instant::now();
    let mut running = tokio::task::JoinSet::new();
    // Done at once, or failing at once: judged on the spot.
    assert_eq!(run_fault(&argv(&["true"]), Duration::from_secs(5), t0, &mut running).await, Ok(()));
    let failed =
        run_fault(&argv(&["sh", "-c", "echo nope >&2; exit 3"]), Duration::from_secs(5), t0, &mut running).await;
    assert_eq!(failed, Err("exit status: 3 (nope)".to_owned()));
    assert!(run_fault(&argv(&["/nonexistent/fault"]), Duration::from_secs(5), t0, &mut running).await.is_err());
    assert_eq!(running.len(), 1, "what the one that succeeded started is held until its `for`");
    // Still running after a second: injected, and it goes on in the background; failing later (as a
    // client cut off when mend heals its target) does not undo the injection.
    let started = Instant::now();
    let later = run_fault(&argv(&["sh", "-c", "sleep 2; exit 1"]), Duration::from_secs(5), t0, &mut running).await;
    assert_eq!(later, Ok(()));
    assert!(started.elapsed() < Duration::from_secs(2), "the game day is not held while it runs");
    // A command that outlives its `for` is killed then.
    let dir = tempfile::tempdir().expect("temp dir");
    let marker = dir.path().join("still-running");
    let script = format!("sleep 3; touch {}", marker.display());
    assert_eq!(run_fault(&argv(&["sh", "-c", &script]), Duration::from_millis(1500), t0, &mut running).await, Ok(()));
    // And what a command started in the background and left running is stopped at the fault's `for` too.
    let orphan = dir.path().join("orphan-finished");
    let background = format!("(sleep 3; touch {}) & exit 0", orphan.display());
    assert_eq!(
        run_fault(&argv(&["sh", "-c", &background]), Duration::from_millis(1500), t0, &mut running).await,
        Ok(())
    );
    while running.join_next().await.is_some() {}
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!marker.exists(), "killed at its `for`, before it could finish");
    assert!(!orphan.exists(), "its background process was killed with its group");
}

#[tokio::test]
async fn a_load_command_is_drained_while_it_runs_and_interrupted_for_its_summary() {
    let dir = tempfile::tempdir().expect("temp dir");
    let flooded = dir.path().join("flooded");
    // 1 MB of output first (a pipe holds 64 KiB: undrained, the command blocks there), then a summary
    // on SIGINT, as hey and wrk print theirs.
    let script = format!(
        "import signal, sys, time, pathlib\n\
         def summary(*_):\n    print('Summary: 42 requests', flush=True)\n    sys.exit(0)\n\
         signal.signal(signal.SIGINT, summary)\n\
         sys.stdout.write('x' * 1_000_000 + '\\n'); sys.stdout.flush()\n\
         pathlib.Path({flooded:?}).touch()\n\
         time.sleep(60)\n",
        flooded = flooded.display().to_string()
    );
    let argv = vec!["python3".to_owned(), "-c".to_owned(), script];
    let load = start_load_command(&argv).expect("starts");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !flooded.exists() {
        assert!(Instant::now() < deadline, "the command blocked on its own output");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let started = Instant::now();
    let output = stop_load_command(load).await;
    assert!(started.elapsed() < Duration::from_secs(4), "stopped by SIGINT, not by the SIGKILL after 5 s");
    let tail = output.get(output.len().saturating_sub(80)..);
    assert!(output.ends_with("Summary: 42 requests\n"), "the summary is kept: {tail:?}");
    assert!(output.len() <= LOAD_OUTPUT_BYTES, "only the tail is kept: {} bytes", output.len());
    assert!(start_load_command(&["/nonexistent/load".to_owned()]).is_err());
}
