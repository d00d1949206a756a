//! The dashboard in a real browser (issue 17): a real mend with mend-demo replicas and Python's
//! http.server, and Debian's chromium driven by playwright-core (`tests/ui/dashboard.mjs`, installed by
//! `scripts/test` with `npm ci`). The script does the browsing and exits non-zero naming the step that
//! failed; this test starts mend for it and checks, through the API, that what the page did went through
//! mend's journal as an operator's and an approver's actions.
#![allow(clippy::disallowed_methods)] // End-to-end tests wait in real time.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Daemon, get};

fn ui_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui")
}

const TOKEN: &str = "ui-test-token-5d1c";

/// Starts a replica's program after printing a line that would run as script if the page ever treated
/// a log line as markup.
const HOSTILE_START: &str = "#!/bin/sh\nprintf '%s\\n' '<script>window.__pwned=1</script><img src=x onerror=\"window.__pwned=2\">'\nexec \"$@\"\n";

#[test]
fn issue_17_dashboard_in_chromium() {
    let playwright = ui_dir().join("node_modules/playwright-core");
    assert!(
        playwright.is_dir(),
        "{} is missing: scripts/test installs it (npm ci --prefix crates/mend/tests/ui)",
        playwright.display()
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    assert!(Path::new(&chromium).exists(), "{chromium} is missing: scripts/test installs Debian's chromium");

    let scripts = tempfile::tempdir().expect("temp dir");
    let hostile = scripts.path().join("hostile-start.sh");
    std::fs::write(&hostile, HOSTILE_START).expect("write script");
    let web = common::free_ports(4);
    let files = common::free_ports(1);
    let config = format!(
        r#"[api]
listen = "{{api}}"
token = "{TOKEN}"

[healing]
mode = "approve"

[[heal]]
when = "alert:Sick"
actions = ["restart"]
verify = "2s"

[service.web]
command = ["sh", "{hostile}", "{{demo}}", "--port", "{{port}}"]
ports = "{web}-{web_end}"
replicas = 2
[service.web.liveness]
http = "http://127.0.0.1:{{port}}/health"

[service.files]
command = ["python3", "-m", "http.server", "{{port}}", "--bind", "127.0.0.1"]
ports = "{files}"
[service.files.readiness]
http = "http://127.0.0.1:{{port}}/"
"#,
        hostile = hostile.display(),
        web_end = web + 3,
    );
    let daemon = Daemon::start(&config);
    daemon.wait_ready("web");
    daemon.wait_ready("files");

    let url = format!("http://{}", daemon.api);
    let mut command = Command::new("node");
    command
        .arg(ui_dir().join("dashboard.mjs"))
        .current_dir(ui_dir())
        .env("MEND_URL", &url)
        .env("MEND_TOKEN", TOKEN)
        .env("CHROMIUM", &chromium)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // MEND_UI_SCREENSHOTS, when set, passes on: the script saves the main views there.
    let mut child = command.spawn().expect("run node (scripts/test installs nodejs)");
    // Bounded: the script's own waits add up to well under this.
    let deadline = Instant::now() + Duration::from_secs(300);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for node") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break child.wait().expect("wait for node");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = child.wait_with_output().expect("node's output");
    let report = format!(
        "{}\n{}\nmend's log:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        daemon.log_text()
    );
    assert!(status.success(), "the browser test failed ({status}):\n{report}");

    // What the page did went through mend's journal: an operator's restart of web/1 with the
    // dashboard's reason, and the approved policy action.
    let actions =
        get(daemon.api, "/api/v1/actions?limit=100").json()["actions"].as_array().cloned().unwrap_or_default();
    assert!(
        actions.iter().any(|a| a["actor"]["by"] == "operator"
            && a["action"]["kind"] == "restart"
            && a["replica"] == 1
            && a["reason"].as_str().is_some_and(|r| r.contains("dashboard"))),
        "no operator restart from the dashboard: {actions:#?}"
    );
    assert!(
        actions.iter().any(|a| a["actor"]["by"] == "policy" && a["state"] != "pending" && a["replica"] == 1),
        "no approved policy action: {actions:#?}"
    );
}
