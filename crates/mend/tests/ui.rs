//! The dashboard in a real browser (issue 17): a real mend with mend-demo replicas and Python's
//! http.server, and Debian's chromium driven by playwright-core (`tests/ui/dashboard.mjs`, installed by
//! `scripts/test` with `npm ci`). The script does the browsing and exits non-zero naming the step that
//! failed; this test starts mend for it and checks, through the API, that what the page did went through
//! mend's journal as an operator's and an approver's actions, and that the rollout the script started with
//! `mend deploy` was paused and aborted from the page.
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
    let shop = common::free_ports(3);
    let shop_proxy = common::free_ports(1);
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

[service.shop]
command = ["{{demo}}", "--port", "{{port}}"]
ports = "{shop}-{shop_end}"
stable_release = "v1"
[service.shop.release.v1]
[service.shop.release.v2]
args = ["--name", "v2"]
[service.shop.liveness]
http = "http://127.0.0.1:{{port}}/health"
[service.shop.proxy]
listen = "127.0.0.1:{shop_proxy}"
"#,
        hostile = hostile.display(),
        web_end = web + 3,
        shop_end = shop + 2,
    );
    let daemon = Daemon::start(&config);
    daemon.wait_ready("web");
    daemon.wait_ready("files");
    daemon.wait_ready("shop");

    let url = format!("http://{}", daemon.api);
    let mut command = Command::new("node");
    command
        .arg(ui_dir().join("dashboard.mjs"))
        .current_dir(ui_dir())
        .env("MEND_URL", &url)
        .env("MEND_TOKEN", TOKEN)
        .env("CHROMIUM", &chromium)
        // The script deploys a canary with the CLI, as an operator would.
        .env("MEND_BIN", env!("CARGO_BIN_EXE_mend"))
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
    // The rollout: paused from the page, then aborted from it (the abort rolls the canary back).
    let rollout = get(daemon.api, "/api/v1/services/shop/rollout").json();
    assert!(
        ["rolling_back", "rolled_back"].contains(&rollout["rollout"]["phase"].as_str().unwrap_or("")),
        "{rollout:#}"
    );
    let history = rollout["history"].to_string();
    assert!(history.contains("aborted by an operator"), "{rollout:#}");
}

/// A `/api/v1/stream` client over a raw socket: the answer's head, then its events as they come.
struct StreamClient {
    stream: std::net::TcpStream,
    head: String,
    buffer: String,
}

impl StreamClient {
    fn open(address: std::net::SocketAddr) -> Self {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect_timeout(&address, Duration::from_secs(2)).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
        let request = format!("GET /api/v1/stream HTTP/1.1\r\nHost: {address}\r\nAccept: text/event-stream\r\n\r\n");
        stream.write_all(request.as_bytes()).expect("send");
        let mut raw = Vec::new();
        let mut byte = [0_u8; 1];
        while !raw.ends_with(b"\r\n\r\n") {
            let n = stream.read(&mut byte).expect("the answer's head");
            assert_eq!(n, 1, "the stream closed before its head: {}", String::from_utf8_lossy(&raw));
            raw.push(byte[0]);
        }
        Self { stream, head: String::from_utf8_lossy(&raw).into_owned(), buffer: String::new() }
    }

    /// Reads until the stream has sent a chunk holding all of `needles`; returns what it read.
    fn read_until(&mut self, needles: &[&str]) -> String {
        use std::io::Read;
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut chunk = [0_u8; 4096];
        while !needles.iter().all(|needle| self.buffer.contains(needle)) {
            assert!(Instant::now() < deadline, "the stream did not send {needles:?} within 20s: {}", self.buffer);
            let n = self.stream.read(&mut chunk).expect("read the stream");
            assert!(n > 0, "the stream ended: {}", self.buffer);
            self.buffer.push_str(&String::from_utf8_lossy(&chunk[..n]));
        }
        std::mem::take(&mut self.buffer)
    }
}

fn metric(daemon: &Daemon, name: &str) -> Option<f64> {
    let page = get(daemon.api, "/metrics").body;
    page.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The stream follows the bus (a kill -9 arrives as a replica change and events), at most
/// `MAX_STREAM_CLIENTS` are served at once (the next is refused and counted), and a client that went away
/// frees its place. The dashboard's files carry their headers, and the Host guard covers them.
#[test]
fn issue_17_stream_follows_the_bus_within_its_bounds_and_the_ui_is_guarded() {
    let port = common::free_ports(2);
    let daemon = Daemon::start(&format!(
        "[api]\nlisten = \"{{api}}\"\n[service.web]\ncommand = [\"{{demo}}\", \"--port\", \"{{port}}\"]\nports = \"{port}-{}\"\n[service.web.liveness]\nhttp = \"http://127.0.0.1:{{port}}/health\"\n",
        port + 1
    ));
    let pids = daemon.wait_ready("web");

    // The page, its headers, and the guard.
    let root = get(daemon.api, "/");
    assert_eq!((root.status, root.header("location")), (303, Some("/ui/")), "{root:?}");
    let page = get(daemon.api, "/ui/");
    assert_eq!(page.status, 200);
    assert_eq!(page.header("content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(page.header("content-security-policy"), Some(mend_api::CONTENT_SECURITY_POLICY));
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    let etag = page.header("etag").expect("an etag").to_owned();
    let again = common::http("GET", daemon.api, "/ui/", &[("If-None-Match", &etag)]).expect("request");
    assert_eq!((again.status, again.body.as_str()), (304, ""));
    let rebound = {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(daemon.api).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        stream.write_all(b"GET /ui/ HTTP/1.1\r\nHost: evil.example:7070\r\nConnection: close\r\n\r\n").expect("send");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).expect("answer");
        answer
    };
    assert!(rebound.starts_with("HTTP/1.1 403"), "{rebound}");

    // As many streams as mend serves, then one more.
    let mut clients: Vec<StreamClient> =
        (0..mend_api::MAX_STREAM_CLIENTS).map(|_| StreamClient::open(daemon.api)).collect();
    for client in &clients {
        assert!(client.head.starts_with("HTTP/1.1 200"), "{}", client.head);
        assert!(client.head.to_ascii_lowercase().contains("content-type: text/event-stream"), "{}", client.head);
    }
    // Read as a stream too: were it served, it would never end.
    let mut refused = StreamClient::open(daemon.api);
    assert!(refused.head.starts_with("HTTP/1.1 503"), "{}", refused.head);
    assert!(refused.head.to_ascii_lowercase().contains("content-type: application/json"), "{}", refused.head);
    refused.read_until(&["streams are open"]);
    drop(refused);
    assert_eq!(metric(&daemon, "mend_api_stream_refused_total"), Some(1.0));
    assert_eq!(metric(&daemon, "mend_api_stream_clients"), Some(mend_api::MAX_STREAM_CLIENTS as f64));

    // A kill -9 reaches every client: the replica's change and the events, as they happen.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pids[0] as i32), nix::sys::signal::Signal::SIGKILL)
        .expect("kill the replica");
    for client in &mut clients {
        let seen = client.read_until(&["event: replica", "\"kind\":\"exited\"", "\"condition\":\"ready\""]);
        assert!(seen.contains("\"service\":\"web\""), "{seen}");
    }

    // Clients that went away free their places once mend next writes to them (a message, or the
    // keep-alive comment every 15 s).
    clients.truncate(2);
    let new_pid = daemon.wait_ready("web")[0];
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(new_pid as i32), nix::sys::signal::Signal::SIGKILL)
        .expect("kill the replica again");
    common::eventually(Duration::from_secs(40), "the streams of clients that left are closed", || {
        (metric(&daemon, "mend_api_stream_clients") == Some(2.0)).then_some(())
    });
    let another = StreamClient::open(daemon.api);
    assert!(another.head.starts_with("HTTP/1.1 200"), "{}", another.head);
    assert_eq!(metric(&daemon, "mend_api_stream_refused_total"), Some(1.0), "nothing refused since");
}
