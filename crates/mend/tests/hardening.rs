//! Issue 20, end to end: what a hostile client on the same host (or a careless user) could make mend do,
//! reproduced as the reports described it, and what mend must do instead.
#![allow(clippy::disallowed_methods)] // Tests wait in real time.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Daemon, cpu_to_myself, eventually, free_ports, get, http, read};

fn demo_config(extra_api: &str) -> String {
    let port = free_ports(1);
    format!(
        r#"
[api]
listen = "{{api}}"
{extra_api}
[service.web]
command = ["{{demo}}", "--port", "{{port}}"]
ports = "{port}-{port}"
[service.web.liveness]
http = "http://127.0.0.1:{{port}}/health"
interval = "200ms"
timeout = "1s"
failure_threshold = 3
"#
    )
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    read(std::path::Path::new(&format!("/proc/{pid}/status")))
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// How many files a process holds open.
fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|dir| dir.count()).unwrap_or(0)
}

/// One `GET /healthz` on a fresh connection: how long until the whole answer arrived.
fn healthz_latency(api: SocketAddr) -> Duration {
    let started = Instant::now();
    let answer = http("GET", api, "/healthz", &[]).expect("healthz");
    assert_eq!(answer.status, 200);
    started.elapsed()
}

/// Percent-encodes a query parameter.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b == b'_' { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

/// Issue 20 (1): one 1.7 KB `GET /api/v1/query` with 40 matchers like `l=~"\p{L}{200}"` took mend from
/// 17 MB to 855 MB for 7.4 s, and `/healthz` waited 7.7 s behind it; three at once, 1.78 GB. Now each is
/// refused with a 400 that names the limit, mend's memory hardly moves, and `/healthz` answers at once
/// meanwhile (the bound is generous for a loaded 2-core machine; BENCHMARKS.md has measured figures).
#[test]
fn issue_20_hostile_queries_cost_little_and_healthz_stays_fast() {
    let _cpu = cpu_to_myself();
    let daemon = Daemon::start(&demo_config(""));
    daemon.wait_ready("web");
    let rss_before = rss_kib(daemon.pid());
    let matchers: Vec<String> = (0..40).map(|idx| format!(r#"l{idx}=~"\\p{{L}}{{200}}""#)).collect();
    let hostile = format!("up{{{}}}", matchers.join(","));
    let path = format!("/api/v1/query?query={}", encode(&hostile));
    let done = Arc::new(AtomicBool::new(false));
    let answers: Vec<_> = (0..3)
        .map(|_| {
            let (api, path) = (daemon.api, path.clone());
            std::thread::spawn(move || http("GET", api, &path, &[]).expect("query"))
        })
        .collect();
    let watcher = {
        let (api, done) = (daemon.api, done.clone());
        std::thread::spawn(move || {
            let mut latencies = Vec::new();
            while !done.load(Ordering::SeqCst) || latencies.len() < 20 {
                latencies.push(healthz_latency(api));
                std::thread::sleep(Duration::from_millis(10));
            }
            latencies
        })
    };
    for answer in answers {
        let answer = answer.join().expect("query thread");
        assert_eq!(answer.status, 400, "{}", answer.body);
        let error = answer.json()["error"].as_str().unwrap_or_default().to_owned();
        assert!(
            error.starts_with(r#"regular expression "\\p{L}{200}" for label "l0" is too large"#),
            "a clear refusal: {error}"
        );
    }
    done.store(true, Ordering::SeqCst);
    let mut latencies = watcher.join().expect("healthz thread");
    latencies.sort();
    let worst = latencies.last().copied().unwrap_or_default();
    assert!(worst < Duration::from_millis(500), "/healthz took {worst:?} while hostile queries ran: {latencies:?}");
    let grown_mib = rss_kib(daemon.pid()).saturating_sub(rss_before) / 1024;
    assert!(grown_mib < 100, "three hostile queries grew mend by {grown_mib} MiB (855 MiB each before)");
    // A valid query with a regex still works.
    let fine = get(daemon.api, &format!("/api/v1/query?query={}", encode(r#"up{job=~".+"} or vector(1)"#)));
    assert_eq!(fine.status, 200, "{}", fine.body);
}

/// Sends `bytes` and keeps the stream (nothing is read).
fn open_with(api: SocketAddr, bytes: &[u8]) -> Option<TcpStream> {
    let mut stream = TcpStream::connect_timeout(&api, Duration::from_secs(2)).ok()?;
    stream.write_all(bytes).ok()?;
    Some(stream)
}

/// Whether mend closed `stream` (EOF or reset) within `wait`; a 408 answer before the close counts too.
fn closed_by_peer(mut stream: &TcpStream, wait: Duration) -> bool {
    let _ = stream.set_read_timeout(Some(wait));
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(error) if matches!(error.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return false;
            }
            Err(_) => return true,
        }
    }
}

/// Issue 20 (2): a partial request line, a header sent a byte a second and idle keep-alives stayed open
/// for ever; 300 of them against mend with an fd limit of 256 made its liveness probe fail with "Too many
/// open files", and mend stopped a healthy replica. Now mend closes them after its header deadline (10 s),
/// holds at most a quarter of its fd limit in API connections, closes the oldest idle or partial one when
/// a new one comes at that limit (so `/healthz` still gets in), and the replica is never touched.
#[test]
fn issue_20_slow_loris_cannot_make_mend_stop_a_healthy_replica() {
    let daemon = Daemon::start_with(&demo_config(""), &["prlimit", "--nofile=256:256"]);
    let pids = daemon.wait_ready("web");
    let mend = daemon.pid();
    let started = Instant::now();
    // A third each: a partial request line, a header dripped a byte at a time, idle after a full request.
    let complete = format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n\r\n", daemon.api);
    let mut partial = Vec::new();
    let mut drips = Vec::new();
    let mut idle = Vec::new();
    for idx in 0..300 {
        let stream = match idx % 3 {
            0 => open_with(daemon.api, b"GET /api/v1/serv"),
            1 => open_with(daemon.api, b"GET /healthz HTTP/1.1\r\nX-Drip: "),
            _ => open_with(daemon.api, complete.as_bytes()),
        };
        let Some(stream) = stream else { continue };
        match idx % 3 {
            0 => partial.push(stream),
            1 => drips.push(stream),
            _ => idle.push(stream),
        }
    }
    assert!(partial.len() + drips.len() + idle.len() >= 290, "the attack's connections are open");
    // The drip: one byte a second on each, from one thread, for 25 s (mend's deadline is 10 s).
    let most_fds = Arc::new(Mutex::new(0usize));
    let dripper = {
        let most_fds = most_fds.clone();
        std::thread::spawn(move || {
            let mut still_open = 0;
            for _ in 0..25 {
                still_open = 0;
                for stream in &mut drips {
                    if stream.write_all(b"a").is_ok() {
                        still_open += 1;
                    }
                }
                let fds = fd_count(mend);
                let mut most = most_fds.lock().expect("lock");
                *most = (*most).max(fds);
                drop(most);
                std::thread::sleep(Duration::from_secs(1));
            }
            (drips, still_open)
        })
    };
    // Meanwhile `/healthz` on a new connection gets in: mend closes idle and partial connections to make
    // room for a whole request (before, it waited for a slot, or mend ran out of descriptors).
    let mut latencies = Vec::new();
    while !dripper.is_finished() {
        latencies.push(healthz_latency(daemon.api));
        std::thread::sleep(Duration::from_millis(100));
    }
    latencies.sort();
    let worst = latencies.last().copied().unwrap_or_default();
    assert!(latencies.len() > 50, "{} /healthz answers during the attack", latencies.len());
    assert!(worst < Duration::from_millis(1000), "/healthz took {worst:?} during the attack: {latencies:?}");
    let (drips, _) = dripper.join().expect("dripper");
    let most = *most_fds.lock().expect("lock");
    assert!(most < 200, "mend held {most} files at most (limit 256) during the attack");
    // Every one of the attack's connections is closed by mend in the end, the idle ones included.
    for stream in partial.iter().chain(drips.iter()).chain(idle.iter()) {
        assert!(closed_by_peer(stream, Duration::from_secs(60)), "mend closes each slow connection");
    }
    let attack = started.elapsed();
    drop((partial, drips, idle));
    // The replica was never judged for mend's trouble: same process, no failure, and its runner went on.
    daemon.wait_for_runner_to_move_on("web");
    assert_eq!(daemon.wait_ready("web"), pids, "the replica was not replaced");
    for kind in ["unhealthy", "probe_failed", "mend_trouble", "exited"] {
        assert_eq!(daemon.events(Some(kind)), Vec::<serde_json::Value>::new(), "{kind} during a {attack:?} attack");
    }
}

/// Issue 20 (2), the other half: when mend itself is out of file descriptors anyway, a probe that cannot
/// open its socket is mend's trouble (a `mend_trouble` event, logged at error), not the replica's: the
/// replica is never stopped for it, and the trouble's end is reported.
#[test]
fn issue_20_mend_out_of_file_descriptors_is_its_own_trouble() {
    let daemon = Daemon::start(&demo_config(""));
    let pids = daemon.wait_ready("web");
    let mend = daemon.pid();
    // mend's limit is lowered to what it holds now plus a few, and a few connections take those.
    let soft_before = read(std::path::Path::new(&format!("/proc/{mend}/limits")))
        .lines()
        .find_map(|line| line.strip_prefix("Max open files"))
        .and_then(|rest| rest.split_whitespace().next().map(str::to_owned))
        .expect("mend's fd limit");
    let fds = fd_count(mend);
    let limit = fds + 4;
    let status = std::process::Command::new("prlimit")
        .arg(format!("--pid={mend}"))
        .arg(format!("--nofile={limit}:"))
        .status()
        .expect("run prlimit");
    assert!(status.success());
    let mut hogs: Vec<TcpStream> =
        (0..12).filter_map(|_| open_with(daemon.api, b"GET /healthz HTTP/1.1\r\n")).collect();
    // The positive event: mend says its probe cannot judge the replica, in its log (the API cannot
    // accept a connection meanwhile).
    eventually(Duration::from_secs(20), "mend reports its own trouble", || {
        daemon.log_text().contains("mend's own trouble, not the replica's").then_some(())
    });
    // Trouble for well over the failure threshold (3 probes, 200 ms apart).
    let log_before = daemon.log_text().len();
    eventually(Duration::from_secs(20), "mend keeps failing to open files for 2 s", || {
        (daemon.log_text().len() > log_before).then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    for stream in &mut hogs {
        let _ = stream.shutdown(std::net::Shutdown::Both);
    }
    drop(hogs);
    let status = std::process::Command::new("prlimit")
        .arg(format!("--pid={mend}"))
        .arg(format!("--nofile={soft_before}:"))
        .status()
        .expect("run prlimit");
    assert!(status.success());
    let over = eventually(Duration::from_secs(30), "mend says its trouble is over", || {
        let events = daemon.events(Some("mend_trouble"));
        events.iter().any(|e| e["details"]["over"] == true).then_some(events)
    });
    let began = &over[0];
    assert_eq!(began["details"]["trouble"], "file_descriptors", "{began}");
    assert!(began["message"].as_str().unwrap_or_default().contains("Too many open files"), "{began}");
    assert!(daemon.log_text().lines().any(|line| line.contains("ERROR") && line.contains("mend_trouble")));
    assert_eq!(daemon.wait_ready("web"), pids, "the replica was not replaced");
    for kind in ["unhealthy", "exited", "stopping"] {
        assert_eq!(daemon.events(Some(kind)), Vec::<serde_json::Value>::new(), "no {kind} for mend's trouble");
    }
}

/// Issue 20 (5): with a token set, the DNS-rebinding guard was off for reads: a page on `evil.example`
/// could read logs. It applies to every route, token or not.
#[test]
fn issue_20_the_host_guard_holds_with_a_token() {
    let daemon = Daemon::start(&demo_config(r#"token = "s3cret-token""#));
    daemon.wait_ready("web");
    for path in ["/api/v1/services/web/logs", "/api/v1/services", "/api/v1/events", "/metrics"] {
        let mut stream = TcpStream::connect(daemon.api).expect("connect");
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: evil.example:7070\r\nConnection: close\r\n\r\n").as_bytes(),
            )
            .expect("send");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).expect("read");
        assert!(answer.starts_with("HTTP/1.1 403"), "{path} on a rebound name: {answer}");
    }
    assert_eq!(get(daemon.api, "/api/v1/services/web/logs").status, 200, "reads need no token");
}

/// A `python3 -m http.server` serving `body` as `/metrics` on a free port; killed on drop.
struct StaticServer {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl StaticServer {
    fn start(body: &[u8]) -> StaticServer {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("metrics"), body).expect("write exposition");
        // Port 0 and the port read from python's banner: a port picked free and handed over can be
        // taken in between by any other test binding :0.
        let mut child = std::process::Command::new("python3")
            .args(["-u", "-m", "http.server", "0", "--bind", "127.0.0.1"])
            .current_dir(dir.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3 -m http.server");
        let mut banner = String::new();
        if let Some(stdout) = child.stdout.take() {
            // Returns at the banner or, if python exits, at end of file.
            let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut banner);
        }
        // "Serving HTTP on 127.0.0.1 port 35177 (http://127.0.0.1:35177/) ..."
        let port: Option<u16> =
            banner.split(" port ").nth(1).and_then(|rest| rest.split(' ').next()).and_then(|port| port.parse().ok());
        let Some(port) = port else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("python3 -m http.server did not start: {banner:?}");
        };
        StaticServer { child, port, _dir: dir }
    }
}

impl Drop for StaticServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Issue 20 (4): a target serving a valid 33 MB exposition every second took mend to 700 MB, `/healthz`
/// to 0.7–3.8 s, and made a healthy replica's probe time out ("the process made no progress"): ingest ran
/// on the async workers. Now a scrape holds at most `sample_limit` samples (50,000 by default; parsing
/// stops there and the scrape fails saying so), and ingest runs on a blocking thread: even a target
/// allowed a million samples (parsed in full every second) slows only itself.
#[test]
fn issue_20_a_heavy_scrape_target_slows_only_itself() {
    let _cpu = cpu_to_myself();
    // 500,000 samples, about 25 MB of valid exposition.
    let mut body = String::with_capacity(31 << 20);
    body.push_str("# TYPE heavy_metric gauge\n");
    for idx in 0..500_000 {
        body.push_str(&format!("heavy_metric{{shard=\"{}\",slot=\"slot-{idx:08}\"}} {}\n", idx % 97, idx % 1000));
    }
    assert!(body.len() > 20 << 20 && body.len() < 32 << 20, "{} bytes", body.len());
    let server = StaticServer::start(body.as_bytes());
    let port = free_ports(1);
    let daemon = Daemon::start(&format!(
        r#"
[api]
listen = "{{api}}"
[service.web]
command = ["{{demo}}", "--port", "{{port}}"]
ports = "{port}-{port}"
[service.web.liveness]
http = "http://127.0.0.1:{{port}}/health"
interval = "200ms"
timeout = "1s"
failure_threshold = 3
[[scrape]]
name = "heavy"
url = "http://127.0.0.1:{heavy}/metrics"
interval = "2s"
timeout = "2s"
[[scrape]]
name = "heavy_allowed"
url = "http://127.0.0.1:{heavy}/metrics"
interval = "2s"
timeout = "2s"
sample_limit = 1000000
"#,
        heavy = server.port
    ));
    let pids = daemon.wait_ready("web");
    let rss_before = rss_kib(daemon.pid());
    // The positive event: the default-limited target fails saying why, and the other one was ingested
    // in full three times.
    let failed = eventually(Duration::from_secs(60), "the heavy target's scrape fails on its sample limit", || {
        daemon.events(Some("scrape_failed")).into_iter().find(|e| e["details"]["target"] == "heavy")
    });
    assert_eq!(
        failed["message"], "scraping heavy failed: more than 50000 samples (sample_limit): none kept",
        "{failed}"
    );
    let mut latencies = Vec::new();
    eventually(Duration::from_secs(120), "three full scrapes of the allowed target", || {
        latencies.push(healthz_latency(daemon.api));
        (daemon.query(r#"count_over_time(scrape_samples_scraped{job="heavy_allowed"}[5m]) > 0 and scrape_samples_scraped{job="heavy_allowed"} > 0"#)
            >= 3.0)
            .then_some(())
    });
    latencies.sort();
    // The old failure was every answer slow (0.7–3.8 s, ingest on the async workers). One late answer in
    // a hundred is tolerated: on a loaded 2-core CI machine a debug build stalled once for 3 s, a cause
    // not found yet (store growth and the sweep, made cheaper since, were suspects).
    let median = latencies.get(latencies.len() / 2).copied().unwrap_or_default();
    let slow = latencies.iter().filter(|latency| **latency >= Duration::from_millis(1000)).count();
    assert!(
        median < Duration::from_millis(100) && slow <= 1.max(latencies.len() / 100),
        "/healthz during heavy scrapes: median {median:?}, {slow} over 1 s: {latencies:?}"
    );
    let grown_mib = rss_kib(daemon.pid()).saturating_sub(rss_before) / 1024;
    assert!(grown_mib < 400, "mend grew by {grown_mib} MiB");
    // The replica was never judged for mend's load.
    assert_eq!(daemon.wait_ready("web"), pids);
    for kind in ["probe_failed", "unhealthy"] {
        assert_eq!(daemon.events(Some(kind)), Vec::<serde_json::Value>::new(), "{kind} during heavy scrapes");
    }
}

/// Runs `mend run` on `config` with `state_dir` and returns its exit code and log, or panics if it is
/// still running after 20 s (it must refuse before it starts anything).
fn run_refused(config: &std::path::Path, state_dir: &std::path::Path) -> (Option<i32>, String) {
    let mut child = std::process::Command::new(common::MEND)
        .arg("run")
        .arg("-c")
        .arg(config)
        .arg("--state-dir")
        .arg(state_dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn mend");
    let status = eventually(Duration::from_secs(20), "mend refuses to start", || child.try_wait().ok().flatten());
    let mut log = String::new();
    if let Some(mut stderr) = child.stderr.take() {
        let _ = stderr.read_to_string(&mut log);
    }
    (status.code(), log)
}

fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path)
        .map(|meta| meta.mode() & 0o7777)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Issue 20 (3): with a state directory owned by another user and symlinks planted in it, mend (as root)
/// followed them. Now mend refuses a state directory that another user owns or that group or others may
/// write, and says how to fix it.
#[test]
fn issue_20_a_state_directory_others_control_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("mend.toml");
    std::fs::write(&config, format!("[api]\nlisten = \"127.0.0.1:{}\"\n", free_ports(1))).expect("config");
    let foreign = dir.path().join("foreign");
    std::fs::create_dir(&foreign).expect("mkdir");
    std::os::unix::fs::chown(&foreign, Some(65534), Some(65534)).expect("chown (the tests run as root)");
    let (code, log) = run_refused(&config, &foreign);
    assert_eq!(code, Some(1), "{log}");
    assert!(
        log.contains(&format!(
            "the state directory {} is owned by uid 65534, not by mend's user (uid 0)",
            foreign.display()
        )),
        "{log}"
    );
    assert!(!foreign.join("mend.lock").exists() && !foreign.join("mend.db").exists(), "nothing written in it");
    let open = dir.path().join("open");
    std::fs::create_dir(&open).expect("mkdir");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let (code, log) = run_refused(&config, &open);
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("is writable by its group and others (mode 0777)") && log.contains("chmod go-w"), "{log}");
    // A planted lock file that is a symlink: refused, its target untouched.
    let planted = dir.path().join("planted");
    std::fs::create_dir(&planted).expect("mkdir");
    std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "precious\n").expect("write");
    std::os::unix::fs::symlink(&victim, planted.join("mend.lock")).expect("symlink");
    let (code, log) = run_refused(&config, &planted);
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("mend.lock is a symlink: mend does not follow those in its state directory"), "{log}");
    assert_eq!(read(&victim), "precious\n");
}

/// Issue 20 (3): files and directories took their modes from the umask (0666/0777 under `umask 000`),
/// planted symlinks were followed (the run tag and pid files overwrote their targets, a replica's output
/// was appended to a root-only file, a rotated log pointing at a 0600 secret was served by `GET .../logs`),
/// and a `run/*.pid` without start ticks made mend signal any process group. Now the state directory is
/// 0700 and its files 0600 whatever the umask, nothing planted is followed, and such pid files are ignored.
#[test]
fn issue_20_planted_symlinks_and_pid_files_are_not_followed() {
    use std::os::unix::fs::PermissionsExt;
    let outside = tempfile::tempdir().expect("temp dir");
    let victim = |name: &str| {
        let path = outside.path().join(name);
        std::fs::write(&path, format!("{name}: precious\n")).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        path
    };
    let (tag_victim, pid_victim, log_victim, secret) = (victim("tag"), victim("pid"), victim("log"), victim("secret"));
    // A process of someone else's, leading its own group, that planted pid files name.
    let mut sleeper = std::process::Command::new("setsid").args(["sleep", "300"]).spawn().expect("setsid sleep");
    let sleeper_pid = eventually(Duration::from_secs(5), "the sleeper leads its own group", || {
        let stat = read(std::path::Path::new(&format!("/proc/{}/stat", sleeper.id())));
        let fields: Vec<&str> = stat.rsplit_once(") ")?.1.split_whitespace().collect();
        (fields.get(2)? == &sleeper.id().to_string() && stat.contains("(sleep)")).then(|| sleeper.id())
    });
    let ticks: u64 = read(std::path::Path::new(&format!("/proc/{sleeper_pid}/stat")))
        .rsplit_once(") ")
        .and_then(|(_, rest)| rest.split_whitespace().nth(19)?.parse().ok())
        .expect("start ticks");

    let port = free_ports(2);
    let config = format!(
        r#"
[api]
listen = "{{api}}"
[service.web]
command = ["{{demo}}", "--port", "{{port}}"]
ports = "{port}-{port}"
[service.web.liveness]
http = "http://127.0.0.1:{{port}}/health"
[service.other]
command = ["{{demo}}", "--port", "{{port}}"]
ports = "{other}-{other}"
"#,
        other = port + 1
    );
    // The state directory is laid out before mend starts: the Daemon helper makes it from its config,
    // so the planted files go into a directory it will use.
    let mut daemon = Daemon::start_with(&config, &["sh", "-c", "umask 000; exec \"$0\" \"$@\""]);
    daemon.wait_ready("web");
    let state = daemon.state_dir();
    let _ = daemon.signal_and_wait(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(30));
    let run = state.join("run");
    let logs = state.join("logs");
    // Everything mend made under `umask 000`: directories 0700, files 0600.
    for path in [state.clone(), run.clone(), logs.clone(), logs.join("web")] {
        assert_eq!(mode(&path), 0o700, "{}", path.display());
    }
    for path in [state.join("mend.lock"), state.join("mend.db"), run.join("run.tag"), logs.join("web").join("0.log")] {
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }
    for name in ["mend.db-wal", "mend.db-shm"] {
        if state.join(name).exists() {
            assert_eq!(mode(&state.join(name)), 0o600, "{name}");
        }
    }
    // Now the planting, in mend's own directory (as a compromised account of mend's user could).
    let plant = |link: std::path::PathBuf, target: &std::path::Path| {
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(target, &link).expect("symlink");
    };
    plant(run.join("run.tag"), &tag_victim);
    plant(run.join("web.0.pid"), &pid_victim);
    plant(logs.join("web").join("0.log.1"), &secret);
    std::fs::create_dir_all(logs.join("other")).expect("mkdir");
    plant(logs.join("other").join("0.log"), &log_victim);
    for (name, text) in [
        ("evil.0.pid", format!("{sleeper_pid}\n")),
        ("evil.1.pid", format!("{sleeper_pid} {}\n", ticks + 1)),
        ("evil.2.pid", "1 0\n".to_owned()),
        ("evil.3.pid", format!("{sleeper_pid} {ticks}\n")),
    ] {
        std::fs::write(run.join(name), text).expect("plant a pid file");
    }
    daemon.spawn();
    daemon.wait_ready("web");
    // The replica that cannot open its log (a planted symlink) does not start, and says why.
    let failed = eventually(Duration::from_secs(20), "other's spawn fails on its planted log", || {
        daemon.events(Some("spawn_failed")).into_iter().find(|e| e["service"] == "other")
    });
    assert!(failed["message"].as_str().unwrap_or_default().contains("0.log is a symlink"), "{failed}");
    // The logs API serves nothing through the planted rotated log.
    let answer = get(daemon.api, "/api/v1/services/web/logs?replica=0&tail=1000");
    assert_eq!(answer.status, 200);
    assert!(!answer.body.contains("precious"), "{}", answer.body);
    assert!(answer.body.contains("listening"), "the readable lines are served: {}", answer.body);
    for path in [&tag_victim, &pid_victim, &log_victim, &secret] {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        assert_eq!(read(path), format!("{name}: precious\n"), "{} was written through a symlink", path.display());
    }
    assert!(std::fs::symlink_metadata(run.join("run.tag")).expect("run tag").is_file(), "replaced, not followed");
    // No planted pid file made mend signal the sleeper's group, and they are gone.
    assert!(common::alive(sleeper_pid), "mend signalled a process group it did not start");
    for idx in 0..4 {
        assert!(!run.join(format!("evil.{idx}.pid")).exists());
    }
    assert!(daemon.log_text().contains("ignored a pid file without a start time or naming group 0 or 1"));
    let _ = sleeper.kill();
    let _ = sleeper.wait();
}

/// Issue 20 (6): `GET .../logs?tail=100000` answered 137 MB (the line cap does not bound bytes); an
/// Alertmanager post kept a 1.9 MB summary, and any number of distinct alerts were kept. Now a log
/// answer holds at most 4 MiB (saying that earlier lines were left out), a request body at most 1 MiB,
/// a summary at most 4 KiB (cut, saying so), and at most 10,000 distinct alerts fire at once (the rest
/// refused, saying so).
#[test]
fn issue_20_log_answers_and_alertmanager_posts_are_bounded() {
    let line = "x".repeat(1000);
    let daemon = Daemon::start(&format!(
        r#"
[api]
listen = "{{api}}"
[service.chatty]
command = ["sh", "-c", "i=0; while [ $i -lt 20000 ]; do echo {line}; i=$((i+1)); done; echo done writing; exec sleep 300"]
"#
    ));
    eventually(Duration::from_secs(60), "the replica wrote 20 MB of logs", || {
        let tail = get(daemon.api, "/api/v1/services/chatty/logs?tail=1");
        tail.body.contains("done writing").then_some(())
    });
    let answer = get(daemon.api, "/api/v1/services/chatty/logs?tail=100000");
    assert_eq!(answer.status, 200);
    assert!(answer.body.len() <= (4 << 20) + 200, "{} bytes in one answer", answer.body.len());
    assert!(answer.body.len() > (3 << 20), "most of the budget is used: {} bytes", answer.body.len());
    assert!(
        answer.body.starts_with("[mend: earlier lines left out: at most 4194304 bytes per replica in one answer]\n"),
        "{}",
        &answer.body[..200]
    );
    assert!(answer.body.ends_with("done writing\n"));
    assert!(answer.body.lines().skip(1).all(|l| l == line || l == "done writing"), "whole lines only");

    // Alertmanager: a body over 1 MiB is refused, a long summary is cut.
    let webhook = |alerts: &[serde_json::Value]| {
        serde_json::json!({ "version": "4", "status": "firing", "alerts": alerts }).to_string()
    };
    let alert = |name: &str, summary: &str| {
        serde_json::json!({
            "status": "firing", "labels": { "alertname": name, "severity": "warning" },
            "annotations": { "summary": summary }, "startsAt": "2026-01-01T00:00:00Z"
        })
    };
    let huge = webhook(&[alert("Huge", &"s".repeat(1_900_000))]);
    let refused = common::http_with_body("POST", daemon.api, "/api/v1/alerts", &[], &huge).expect("post");
    assert_eq!(refused.status, 413, "{}", refused.body);
    let long = webhook(&[alert("Long", &"s".repeat(500_000))]);
    let accepted = common::http_with_body("POST", daemon.api, "/api/v1/alerts", &[], &long).expect("post");
    assert_eq!(accepted.status, 200, "{}", accepted.body);
    let signals = get(daemon.api, "/api/v1/signals?limit=10").json();
    let evidence = signals["signals"][0]["evidence"].as_str().unwrap_or_default().to_owned();
    assert!(
        evidence.len() < 4200 && evidence.ends_with("... [cut by mend: 500000 bytes in all]"),
        "{} bytes",
        evidence.len()
    );
    // Distinct firing alerts: 10,000 kept (the one above included), the rest refused.
    let mut refused_total = 0;
    for batch in 0..11 {
        let alerts: Vec<serde_json::Value> = (0..1000).map(|idx| alert(&format!("A{batch}x{idx}"), "s")).collect();
        let answer =
            common::http_with_body("POST", daemon.api, "/api/v1/alerts", &[], &webhook(&alerts)).expect("post");
        assert_eq!(answer.status, 200, "{}", answer.body);
        refused_total += answer.json()["refused"].as_u64().unwrap_or(0);
    }
    assert_eq!(refused_total, 1001, "11,001 distinct alerts, 10,000 kept");
    assert!(daemon.log_text().contains("refused new Alertmanager alerts"));
}
