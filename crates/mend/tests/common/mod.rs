//! Helpers for end-to-end tests: a real `mend run` on loopback with real `mend-demo` replicas, a small
//! blocking HTTP client, free ports and bounded waiting.

#![allow(clippy::disallowed_methods)] // Tests wait in real time.
#![allow(dead_code, unreachable_pub)] // Each test binary uses a different subset; `pub` is for them.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

pub const MEND: &str = env!("CARGO_BIN_EXE_mend");
pub const DEMO: &str = env!("CARGO_BIN_EXE_mend-demo");

/// Waits until `condition` holds, polling every 20 ms, or panics after `timeout` with `what`.
pub fn eventually<T>(timeout: Duration, what: &str, mut condition: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = condition() {
            return value;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

static CPU: Mutex<()> = Mutex::new(());

/// Held for the whole test by tests that load the CPU on purpose and by tests that bound how fast mend
/// reacts: libtest runs two tests of a binary at a time, and on a 2-core machine a test that spins both
/// cores would otherwise decide the other's timing.
pub fn cpu_to_myself() -> MutexGuard<'static, ()> {
    CPU.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Where this test binary's next port block starts; 0 until the first call.
static NEXT_PORT: AtomicU16 = AtomicU16::new(0);

/// The ports handed out lie in `PORTS_FROM..PORTS_TO`: below Linux's ephemeral range (32768 and up,
/// `net.ipv4.ip_local_port_range`), so that no outgoing connection of this or any other process takes one
/// as its local end between the check here and mend's bind.
const PORTS_FROM: u16 = 10_000;
const PORTS_TO: u16 = 32_000;

/// A block of `n` consecutive loopback ports that are free now, for a mend config (port ranges, proxy
/// and API addresses) that needs its ports before mend starts, so that port 0 cannot be used.
///
/// Bind-then-release alone races: another test could be handed the same port before mend binds it. So
/// the ports come from one process-wide cursor that only moves forward, and a port is never handed out
/// twice within a test binary. Test binaries run one after the other, but other checkouts on the same
/// machine may run theirs at the same time: each binary starts at an offset of its own (from its pid),
/// 220 ports apart, more than any of our test binaries uses, and a port that something holds is skipped.
/// What is left is a port taken by an unrelated process between the check and mend's bind: for the API
/// port, [`Daemon::spawn`] notices and starts mend again on another port.
pub fn free_ports(n: u16) -> u16 {
    assert!(n > 0 && n < 100, "a block of 1 to 99 ports");
    let slots = (PORTS_TO - PORTS_FROM) / 220;
    let base = PORTS_FROM + (std::process::id() % u32::from(slots)) as u16 * 220;
    let _ = NEXT_PORT.compare_exchange(0, base, Ordering::SeqCst, Ordering::SeqCst);
    loop {
        // Past the end, go on from the start of the range (a binary would have used 22,000 ports by then).
        let first = NEXT_PORT
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |first| {
                Some(if first + n > PORTS_TO { PORTS_FROM + n } else { first + n })
            })
            .expect("the update always succeeds");
        let first = if first + n > PORTS_TO { PORTS_FROM } else { first };
        if (first..first + n).all(|port| TcpListener::bind(("127.0.0.1", port)).is_ok()) {
            return first;
        }
    }
}

/// A minimal HTTP/1.1 response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    /// The first value of a header (names are lower-cased).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// Sends one request with `Connection: close` and reads the whole response (content-length or chunked).
pub fn http(method: &str, address: SocketAddr, path: &str, headers: &[(&str, &str)]) -> std::io::Result<Response> {
    http_with_body(method, address, path, headers, "")
}

/// Like [`http`], with a request body.
pub fn http_with_body(
    method: &str,
    address: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status =
        lines.next().and_then(|line| line.split_whitespace().nth(1)).and_then(|code| code.parse().ok()).unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let chunked = headers.iter().any(|(name, value)| name == "transfer-encoding" && value.contains("chunked"));
    let body = if chunked { dechunk(body) } else { body.to_owned() };
    Ok(Response { status, headers, body })
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

pub fn get(address: SocketAddr, path: &str) -> Response {
    http("GET", address, path, &[]).unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

pub fn post(address: SocketAddr, path: &str) -> Response {
    http("POST", address, path, &[]).unwrap_or_else(|e| panic!("POST {path}: {e}"))
}

/// Whether a process exists (and is not a zombie).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next()) != Some("Z"),
        Err(_) => false,
    }
}

/// Whether process `pid` holds a TCP socket listening on `port`, on any address (IPv4 or IPv6): mend's
/// own search for listeners (sock_diag for the sockets, then the processes' fds).
pub fn listens_on(pid: u32, port: u16) -> bool {
    mend_observe::process::listeners(port).contains(&pid)
}

/// A `mend run` daemon on loopback with its own config and state directory.
pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub api: SocketAddr,
    pub child: Option<Child>,
    pub config_path: PathBuf,
    /// A command that runs mend (`prlimit --nofile=256`, say), empty to run it directly.
    pub wrapper: Vec<String>,
    /// How many times mend was started: names each start's log file.
    n_spawns: u32,
}

impl Daemon {
    /// Writes `config` (where `{api}` stands for a free API address and `{demo}` for the mend-demo path)
    /// and starts mend on it; waits until the API answers.
    pub fn start(config: &str) -> Self {
        Self::start_with(config, &[])
    }

    /// Like [`Daemon::start`], with mend run by `wrapper` (a command that execs its arguments, so that
    /// the daemon's pid stays mend's).
    pub fn start_with(config: &str, wrapper: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let api: SocketAddr = format!("127.0.0.1:{}", free_ports(1)).parse().expect("valid address");
        let config = config.replace("{api}", &api.to_string()).replace("{demo}", DEMO);
        let config_path = dir.path().join("mend.toml");
        std::fs::write(&config_path, config).expect("write config");
        let wrapper = wrapper.iter().map(|arg| (*arg).to_owned()).collect();
        let mut daemon = Self { dir, api, child: None, config_path, wrapper, n_spawns: 0 };
        daemon.spawn();
        daemon
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Starts (again) `mend run` on this daemon's config and state directory and waits until its API
    /// answers. Should another process have taken the API port since it was picked, mend exits saying so:
    /// the config then gets another API port (everywhere it names the old address) and mend starts again.
    pub fn spawn(&mut self) {
        for _ in 0..5 {
            let log_path = self.dir.path().join(format!("mend-{}.log", self.n_spawns));
            self.n_spawns += 1;
            let log = std::fs::File::create(&log_path).expect("log file");
            let mut command = match self.wrapper.split_first() {
                Some((program, args)) => {
                    let mut command = Command::new(program);
                    command.args(args).arg(MEND);
                    command
                }
                None => Command::new(MEND),
            };
            let mut child = command
                .arg("run")
                .arg("-c")
                .arg(&self.config_path)
                .arg("--state-dir")
                .arg(self.state_dir())
                .env("MEND_LOG", "info")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("spawn mend");
            let api = self.api;
            // The API must be this mend's: an answer from another process on the port proves nothing.
            let deadline = Instant::now() + Duration::from_secs(10);
            let started = loop {
                if let Ok(Some(status)) = child.try_wait() {
                    break Err(status);
                }
                // Asked only once mend listens: a foreign listener might never answer.
                let ours = listens_on(child.id(), api.port());
                if ours && http("GET", api, "/healthz", &[]).is_ok_and(|r| r.status == 200) {
                    break Ok(());
                }
                if Instant::now() > deadline {
                    // A mend that never answered must not outlive the test (it would run on for ever).
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("timed out after 10s waiting for mend's API to answer /healthz:\n{}", read(&log_path));
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            match started {
                Ok(()) => {
                    self.child = Some(child);
                    return;
                }
                Err(status) => {
                    let log = read(&log_path);
                    assert!(
                        log.contains(&format!("cannot listen on {api} (api.listen)")) && log.contains("in use"),
                        "mend exited at start ({status}):\n{log}"
                    );
                    let next: SocketAddr = format!("127.0.0.1:{}", free_ports(1)).parse().expect("valid address");
                    let config = read(&self.config_path).replace(&api.to_string(), &next.to_string());
                    std::fs::write(&self.config_path, config).expect("write config");
                    self.api = next;
                }
            }
        }
        panic!("mend found its API port taken five times in a row");
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).expect("mend is running")
    }

    /// The replicas of `service` from the API.
    pub fn replicas(&self, service: &str) -> Vec<serde_json::Value> {
        let response = get(self.api, &format!("/api/v1/services/{service}"));
        assert_eq!(response.status, 200, "{}", response.body);
        response.json()["replicas"].as_array().cloned().unwrap_or_default()
    }

    pub fn replica(&self, service: &str, index: usize) -> serde_json::Value {
        self.replicas(service)[index].clone()
    }

    /// Waits until every replica of `service` is ready; returns their pids.
    pub fn wait_ready(&self, service: &str) -> Vec<u32> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let replicas = self.replicas(service);
            if replicas.iter().all(|r| r["ready"] == true) {
                return replicas.iter().map(|r| r["pid"].as_u64().expect("pid") as u32).collect();
            }
            if Instant::now() > deadline {
                // What mend saw and said, so that a failure on a loaded CI machine can be understood.
                let events: Vec<String> = self
                    .events(None)
                    .iter()
                    .map(|e| format!("{} {} {} {}", e["at"], e["kind"], e["service"], e["message"]))
                    .collect();
                panic!(
                    "timed out after 15s waiting for {service} to be ready\nreplicas: {replicas:?}\nevents:\n{}\nlog:\n{}",
                    events.join("\n"),
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Events (optionally of one kind) from the API.
    pub fn events(&self, kind: Option<&str>) -> Vec<serde_json::Value> {
        let path = match kind {
            Some(kind) => format!("/api/v1/events?limit=10000&kind={kind}"),
            None => "/api/v1/events?limit=10000".to_owned(),
        };
        get(self.api, &path).json()["events"].as_array().cloned().unwrap_or_default()
    }

    /// The value of an instant PromQL query's first series (NaN when there is none).
    pub fn query(&self, promql: &str) -> f64 {
        self.query_path(&format!("/api/v1/query?query={}", encode_query(promql)))
    }

    /// [`Self::query`] evaluated at `unix_secs`.
    pub fn query_at(&self, promql: &str, unix_secs: f64) -> f64 {
        self.query_path(&format!("/api/v1/query?query={}&time={unix_secs:.3}", encode_query(promql)))
    }

    fn query_path(&self, path: &str) -> f64 {
        let answer = get(self.api, path).json();
        answer["data"]["result"][0]["value"][1].as_str().and_then(|v| v.parse().ok()).unwrap_or(f64::NAN)
    }

    /// Waits until replica 0 of `service`'s runner has been round its loop for at least another second:
    /// it records `mend_replica_up` once a second, from the same loop that fires its timers. A restart
    /// that was going to happen (after a back-off in milliseconds) would have happened by then, so a test
    /// asserts that something did *not* happen after this positive event, not after a guessed sleep.
    pub fn wait_for_runner_to_move_on(&self, service: &str) {
        let samples = format!("count_over_time(mend_replica_up{{service=\"{service}\",replica=\"0\"}}[1h])");
        let before = self.query(&samples);
        let before = if before.is_nan() { 0.0 } else { before };
        eventually(Duration::from_secs(10), "the replica's runner records two more samples", || {
            (self.query(&samples) >= before + 2.0).then_some(())
        });
    }

    /// Runs a mend client command against this daemon.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(MEND).args(args).arg("--api").arg(self.api.to_string()).output().expect("run mend client")
    }

    /// Sends `signal` to mend and waits for it to exit.
    pub fn signal_and_wait(&mut self, signal: nix::sys::signal::Signal, timeout: Duration) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("mend is running");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal).expect("signal mend");
        eventually(timeout, "mend exits", || child.try_wait().ok().flatten())
    }

    pub fn log_text(&self) -> String {
        (0..self.n_spawns).map(|idx| read(&self.dir.path().join(format!("mend-{idx}.log")))).collect()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `promql` percent-encoded for a query string.
fn encode_query(promql: &str) -> String {
    promql
        .bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b == b'_' { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

/// Reads a file into a string, empty when missing.
pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// A blocking HTTP/1.1 client that keeps its connection alive, as load generators and browsers do.
pub struct KeepAlive {
    address: SocketAddr,
    stream: Option<std::io::BufReader<TcpStream>>,
}

impl KeepAlive {
    pub fn new(address: SocketAddr) -> Self {
        Self { address, stream: None }
    }

    /// Sends one request (reconnecting if needed) and reads the response; any error closes the connection.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<Response> {
        use std::io::BufRead;
        if self.stream.is_none() {
            let stream = TcpStream::connect_timeout(&self.address, Duration::from_secs(2))?;
            stream.set_read_timeout(Some(Duration::from_secs(20)))?;
            stream.set_nodelay(true)?;
            self.stream = Some(std::io::BufReader::new(stream));
        }
        let result = (|| {
            let reader = self.stream.as_mut().ok_or_else(|| std::io::Error::other("no connection"))?;
            let mut head =
                format!("{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n", self.address, body.len());
            for (name, value) in headers {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
            head.push_str("\r\n");
            reader.get_mut().write_all(head.as_bytes())?;
            reader.get_mut().write_all(body)?;
            let mut status_line = String::new();
            if reader.read_line(&mut status_line)? == 0 {
                return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed"));
            }
            let status: u16 = status_line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
            let mut response_headers = Vec::new();
            loop {
                let mut line = String::new();
                reader.read_line(&mut line)?;
                let line = line.trim_end();
                if line.is_empty() {
                    break;
                }
                if let Some((name, value)) = line.split_once(':') {
                    response_headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
                }
            }
            let header = |name: &str| response_headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
            let mut body = Vec::new();
            if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
                loop {
                    let mut size_line = String::new();
                    reader.read_line(&mut size_line)?;
                    let size = usize::from_str_radix(size_line.trim(), 16).unwrap_or(0);
                    let mut chunk = vec![0_u8; size + 2];
                    reader.read_exact(&mut chunk)?;
                    if size == 0 {
                        break;
                    }
                    body.extend_from_slice(&chunk[..size]);
                }
            } else if let Some(length) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
                body.resize(length, 0);
                reader.read_exact(&mut body)?;
            }
            let close = header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
            Ok((
                Response { status, headers: response_headers, body: String::from_utf8_lossy(&body).into_owned() },
                close,
            ))
        })();
        match result {
            Ok((response, close)) => {
                if close {
                    self.stream = None;
                }
                Ok(response)
            }
            Err(error) => {
                self.stream = None;
                Err(error)
            }
        }
    }
}

/// What a load run saw.
#[derive(Debug, Default, Clone)]
pub struct LoadReport {
    pub ok: u64,
    pub failed: u64,
    pub failures: Vec<String>,
    pub worst: Duration,
    pub pids: std::collections::HashMap<u32, u64>,
}

/// A load run in progress.
pub struct Load {
    /// Requests answered so far without a server error.
    ok: std::sync::Arc<std::sync::atomic::AtomicU64>,
    thread: std::thread::JoinHandle<LoadReport>,
}

impl Load {
    /// Waits until `n` more requests than now have been answered: the positive event that shows traffic
    /// flowed through whatever happened in between (a test waits for it instead of sleeping).
    pub fn wait_for_more(&self, n: u64) {
        let target = self.ok.load(Ordering::Relaxed) + n;
        eventually(Duration::from_secs(30), &format!("{n} more requests answered"), || {
            (self.ok.load(Ordering::Relaxed) >= target).then_some(())
        });
    }

    pub fn join(self) -> LoadReport {
        self.thread.join().expect("load thread")
    }
}

/// Sends GET `path` from `clients` keep-alive connections until `stop` is set or `max_requests` were
/// sent, pausing `pause` between requests; loopback only, bounded in count and time (2 minutes at most).
pub fn load(
    address: SocketAddr,
    path: &'static str,
    clients: usize,
    max_requests: u64,
    pause: Duration,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Load {
    assert!(address.ip().is_loopback(), "load goes to loopback only");
    let ok = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let progress = ok.clone();
    let thread = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(120);
        let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let workers: Vec<_> = (0..clients)
            .map(|_| {
                let (stop, sent, progress) = (stop.clone(), sent.clone(), progress.clone());
                std::thread::spawn(move || {
                    let mut report = LoadReport::default();
                    let mut client = KeepAlive::new(address);
                    while !stop.load(Ordering::Relaxed)
                        && Instant::now() < deadline
                        && sent.fetch_add(1, Ordering::Relaxed) < max_requests
                    {
                        let started = Instant::now();
                        let result = client.request("GET", path, &[], b"");
                        report.worst = report.worst.max(started.elapsed());
                        match result {
                            Ok(response) if response.status < 500 => {
                                report.ok += 1;
                                progress.fetch_add(1, Ordering::Relaxed);
                                if let Some(pid) = response
                                    .body
                                    .split("(pid ")
                                    .nth(1)
                                    .and_then(|rest| rest.split(')').next())
                                    .and_then(|pid| pid.parse().ok())
                                {
                                    *report.pids.entry(pid).or_default() += 1;
                                }
                            }
                            Ok(response) => {
                                report.failed += 1;
                                report.failures.push(format!("HTTP {}: {}", response.status, response.body.trim()));
                            }
                            Err(error) => {
                                report.failed += 1;
                                report.failures.push(error.to_string());
                            }
                        }
                        std::thread::sleep(pause);
                    }
                    report
                })
            })
            .collect();
        let mut total = LoadReport::default();
        for worker in workers {
            let report = worker.join().unwrap_or_default();
            total.ok += report.ok;
            total.failed += report.failed;
            total.failures.extend(report.failures);
            total.worst = total.worst.max(report.worst);
            for (pid, count) in report.pids {
                *total.pids.entry(pid).or_default() += count;
            }
        }
        total
    });
    Load { ok, thread }
}
