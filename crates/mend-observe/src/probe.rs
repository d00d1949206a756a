//! Health probes: one attempt of an http, tcp or exec check, bounded by a timeout.
//!
//! A probe that times out also reports what the probed process did meanwhile (stopped, busy or idle), read
//! from /proc before and after the wait; the lifecycle uses it to tell a hang from overload.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::Request;
use hyper::header::{CONNECTION, HOST, USER_AGENT};
use hyper_util::rt::TokioIo;
use mend_config::{Check, HttpTarget, TemplateVars, split_host_port};
use mend_types::{MendTrouble, ProbeOutcome, ProcessEvidence, format_duration};
use tokio::net::TcpStream;

use crate::process;

/// Most of a response body an HTTP probe reads when it looks for a substring.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// A check with its templates filled in for one replica.
#[derive(Debug, Clone)]
pub enum ResolvedCheck {
    /// HTTP GET.
    Http {
        /// Where.
        target: HttpTarget,
        /// Accepted statuses (inclusive).
        status: (u16, u16),
        /// Required body substring.
        body_contains: Option<String>,
    },
    /// TCP connect.
    Tcp {
        /// Host name or IP.
        host: String,
        /// Port.
        port: u16,
    },
    /// Command; passes on exit code 0.
    Exec {
        /// argv.
        argv: Vec<String>,
        /// Working directory.
        working_dir: PathBuf,
    },
}

impl ResolvedCheck {
    /// Fills in `check`'s templates for one replica.
    pub fn resolve(check: &Check, vars: &TemplateVars<'_>, working_dir: PathBuf) -> Result<Self, String> {
        Ok(match check {
            Check::Http { url, status, body_contains } => Self::Http {
                target: HttpTarget::parse(&url.render(vars))?,
                status: *status,
                body_contains: body_contains.clone(),
            },
            Check::Tcp { address } => {
                let (host, port) = split_host_port(&address.render(vars), 0)?;
                Self::Tcp { host, port }
            }
            Check::Exec { command } => {
                Self::Exec { argv: command.iter().map(|arg| arg.render(vars)).collect(), working_dir }
            }
        })
    }
}

/// Runs one probe attempt. When it times out and `pid` is given, the outcome carries what the process did
/// during the wait. A failure through mend's own trouble (no file descriptor or memory for the probe, or
/// mend's event loop lagging through the wait) is [`ProbeOutcome::Inconclusive`], never the replica's.
pub async fn run(check: &ResolvedCheck, timeout: Duration, pid: Option<u32>) -> ProbeOutcome {
    let before = pid.and_then(process::family_cpu_state);
    let started = tokio::time::Instant::now();
    match tokio::time::timeout(timeout, attempt(check)).await {
        // The kernel accepts TCP connections into the backlog of a stopped process: a connect alone does
        // not prove the process runs, so its state is read as well.
        Ok(Ok(())) if matches!(check, ResolvedCheck::Tcp { .. }) => match pid.and_then(process::family_cpu_state) {
            Some((state, cpu_after)) if state == 'T' => ProbeOutcome::Timeout {
                evidence: Some(ProcessEvidence {
                    state,
                    cpu_seconds: before.map_or(0.0, |(_, cpu)| cpu_after.saturating_sub(cpu).as_secs_f64()),
                    window_seconds: timeout.as_secs_f64(),
                }),
            },
            _ => ProbeOutcome::Success,
        },
        Ok(Ok(())) => ProbeOutcome::Success,
        Ok(Err(Failed::Replica(reason))) => ProbeOutcome::Failure { reason },
        Ok(Err(Failed::Mend(trouble, reason))) => ProbeOutcome::Inconclusive { trouble, reason },
        Err(_elapsed) => {
            if let Some(lag) = lagged(started, timeout) {
                return ProbeOutcome::Inconclusive {
                    trouble: MendTrouble::Lag,
                    reason: format!(
                        "no answer within {}, but mend's event loop ran up to {} late meanwhile",
                        format_duration(timeout),
                        format_duration(lag)
                    ),
                };
            }
            let after = pid.and_then(process::family_cpu_state);
            let evidence = match (before, after) {
                (Some((_, cpu_before)), Some((state, cpu_after))) => Some(ProcessEvidence {
                    state,
                    cpu_seconds: cpu_after.saturating_sub(cpu_before).as_secs_f64(),
                    window_seconds: timeout.as_secs_f64(),
                }),
                _ => None,
            };
            ProbeOutcome::Timeout { evidence }
        }
    }
}

/// How late mend's event loop ran during a probe's wait, when that is a quarter of the timeout or more
/// (at least 100 ms): then the timeout may be mend's own slowness rather than the replica's.
fn lagged(started: tokio::time::Instant, timeout: Duration) -> Option<Duration> {
    let lag = crate::lag::worst_during(started, tokio::time::Instant::now())?;
    (lag >= (timeout / 4).max(Duration::from_millis(100))).then_some(lag)
}

/// Why an attempt failed: the replica's answer (or silence), or mend's own trouble.
enum Failed {
    Replica(String),
    Mend(MendTrouble, String),
}

impl From<String> for Failed {
    fn from(reason: String) -> Self {
        Failed::Replica(reason)
    }
}

/// An OS error of mend's own (out of descriptors, memory, processes) or the replica's, with `what` failed.
fn os_failure(what: String, error: &std::io::Error) -> Failed {
    match error.raw_os_error().and_then(MendTrouble::from_os_error) {
        Some(trouble) => Failed::Mend(trouble, format!("{what}: {error}")),
        None => Failed::Replica(format!("{what}: {error}")),
    }
}

async fn attempt(check: &ResolvedCheck) -> Result<(), Failed> {
    match check {
        ResolvedCheck::Http { target, status, body_contains } => http(target, *status, body_contains.as_deref()).await,
        ResolvedCheck::Tcp { host, port } => connect(host, *port).await.map(drop),
        ResolvedCheck::Exec { argv, working_dir } => exec(argv, working_dir).await,
    }
}

async fn connect(host: &str, port: u16) -> Result<TcpStream, Failed> {
    let result = match host.parse::<std::net::IpAddr>() {
        Ok(ip) => TcpStream::connect(SocketAddr::new(ip, port)).await,
        Err(_) => TcpStream::connect((host, port)).await,
    };
    result.map_err(|error| os_failure(format!("connect to {host}:{port}"), &error))
}

async fn http(target: &HttpTarget, status: (u16, u16), body_contains: Option<&str>) -> Result<(), Failed> {
    let stream = connect(&target.host, target.port).await?;
    let _ = stream.set_nodelay(true);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|error| format!("http handshake: {error}"))?;
    let request = Request::get(target.path_and_query.as_str())
        .header(HOST, target.authority.as_str())
        .header(USER_AGENT, concat!("mend-probe/", env!("CARGO_PKG_VERSION")))
        .header(CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|error| format!("invalid probe request: {error}"))?;
    let exchange = async {
        let response = sender.send_request(request).await.map_err(|error| format!("http request: {error}"))?;
        let code = response.status().as_u16();
        if !(status.0..=status.1).contains(&code) {
            return Err(format!("http status {code} (expected {}-{})", status.0, status.1));
        }
        if let Some(needle) = body_contains {
            let body = Limited::new(response.into_body(), MAX_BODY_BYTES)
                .collect()
                .await
                .map_err(|error| format!("reading body: {error}"))?
                .to_bytes();
            if !String::from_utf8_lossy(&body).contains(needle) {
                return Err(format!("body does not contain {needle:?}"));
            }
        }
        Ok(())
    };
    // The connection future drives the socket; a failure there surfaces as an error of the exchange.
    let connection = tokio::spawn(connection);
    let result = exchange.await;
    connection.abort();
    result.map_err(Failed::Replica)
}

async fn exec(argv: &[String], working_dir: &PathBuf) -> Result<(), Failed> {
    let (program, args) = argv.split_first().ok_or_else(|| Failed::Replica("empty exec command".to_owned()))?;
    // The probe leads its own process group, and the guard kills the whole group if the probe is dropped
    // (timed out): a probe that starts helpers (`sh -c 'curl ...'`) leaves nothing behind.
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .current_dir(working_dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|error| os_failure(format!("cannot run {program:?}"), &error))?;
    let guard = GroupGuard(child.id());
    let status = child.wait().await.map_err(|error| format!("waiting for {program:?}: {error}"));
    // Helpers the probe left behind still go.
    drop(guard);
    let status = status?;
    if status.success() { Ok(()) } else { Err(Failed::Replica(format!("{program:?} exited with {status}"))) }
}

/// Kills a process group when dropped.
struct GroupGuard(Option<u32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            let _ =
                nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid as i32), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// Serves `response` to every connection on a loopback port.
    async fn serve(response: &'static str) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
        let port = listener.local_addr().expect("local addr").port();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut buf = [0_u8; 1024];
                let _ = stream.read(&mut buf).await;
                let _ = stream.write_all(response.as_bytes()).await;
            }
        });
        port
    }

    fn http_check(port: u16, status: (u16, u16), body: Option<&str>) -> ResolvedCheck {
        ResolvedCheck::Http {
            target: HttpTarget::parse(&format!("http://127.0.0.1:{port}/health")).expect("valid url"),
            status,
            body_contains: body.map(str::to_owned),
        }
    }

    const OK: &str = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok";
    const FAIL: &str = "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\nconnection: close\r\n\r\ndown";
    const SECOND: Duration = Duration::from_secs(1);

    #[tokio::test]
    async fn http_probe_checks_status_and_body() {
        let ok = serve(OK).await;
        let failing = serve(FAIL).await;
        assert_eq!(run(&http_check(ok, (200, 399), Some("ok")), SECOND, None).await, ProbeOutcome::Success);
        assert_eq!(
            run(&http_check(ok, (200, 399), Some("ready")), SECOND, None).await,
            ProbeOutcome::Failure { reason: "body does not contain \"ready\"".into() }
        );
        assert_eq!(
            run(&http_check(failing, (200, 399), None), SECOND, None).await,
            ProbeOutcome::Failure { reason: "http status 503 (expected 200-399)".into() }
        );
        assert_eq!(run(&http_check(failing, (500, 599), None), SECOND, None).await, ProbeOutcome::Success);
    }

    #[tokio::test]
    async fn refused_connections_fail_and_silent_servers_time_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
        let silent = listener.local_addr().expect("local addr").port();
        // A bound socket that does not listen holds its port (no other test can take it) and refuses
        // connections.
        let holder = tokio::net::TcpSocket::new_v4().expect("socket");
        holder.bind("127.0.0.1:0".parse().expect("address")).expect("bind loopback");
        let closed = holder.local_addr().expect("local addr").port();
        let outcome = run(&http_check(closed, (200, 399), None), SECOND, None).await;
        assert!(matches!(&outcome, ProbeOutcome::Failure { reason } if reason.contains("refused")), "{outcome:?}");
        let outcome =
            run(&http_check(silent, (200, 399), None), Duration::from_millis(100), Some(std::process::id())).await;
        let ProbeOutcome::Timeout { evidence: Some(evidence) } = outcome else {
            panic!("expected a timeout: {outcome:?}")
        };
        assert!(!evidence.is_stopped());
        assert_eq!(evidence.window_seconds, 0.1);
        // The tcp check passes against the silent listener: it only connects.
        let tcp = ResolvedCheck::Tcp { host: "127.0.0.1".into(), port: silent };
        assert_eq!(run(&tcp, SECOND, None).await, ProbeOutcome::Success);
        drop(listener);
    }

    #[tokio::test]
    async fn exec_probe_passes_on_exit_zero() {
        let exec = |argv: &[&str]| ResolvedCheck::Exec {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            working_dir: PathBuf::from("/"),
        };
        assert_eq!(run(&exec(&["true"]), SECOND, None).await, ProbeOutcome::Success);
        assert!(matches!(run(&exec(&["false"]), SECOND, None).await, ProbeOutcome::Failure { .. }));
        assert!(matches!(
            run(&exec(&["sleep", "5"]), Duration::from_millis(50), None).await,
            ProbeOutcome::Timeout { .. }
        ));
        assert!(matches!(
            run(&exec(&["/nonexistent/probe"]), SECOND, None).await,
            ProbeOutcome::Failure { reason } if reason.starts_with("cannot run")
        ));
        // A timed-out probe takes its helpers along. A run that timed out before the shell started its
        // helper would prove nothing (and pass): the shell notes the helper's start in a file, and the
        // probe is given longer until it did.
        let marker = format!("sleep 1000{}", std::process::id());
        let started = std::env::temp_dir().join(format!("mend-probe-helper-{}", std::process::id()));
        let mut helper_started = false;
        for timeout_ms in [200, 1_000, 5_000] {
            let _ = std::fs::remove_file(&started);
            let script = format!("{marker} & echo $! > {}; sleep 30", started.display());
            assert!(matches!(
                run(&exec(&["sh", "-c", &script]), Duration::from_millis(timeout_ms), None).await,
                ProbeOutcome::Timeout { .. }
            ));
            helper_started = started.exists();
            if helper_started {
                break;
            }
        }
        let _ = std::fs::remove_file(&started);
        assert!(helper_started, "the probe's shell never started its helper before the probe timed out");
        // Killed at once, but a starved machine may take a while to reap them.
        let mut polls = 0;
        loop {
            let leftovers = std::process::Command::new("pgrep").arg("-f").arg(&marker).output().expect("pgrep");
            if leftovers.stdout.is_empty() {
                break;
            }
            polls += 1;
            assert!(polls < 250, "probe helpers left behind");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
