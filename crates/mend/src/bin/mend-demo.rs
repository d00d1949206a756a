//! mend-demo: a small HTTP service with fault knobs, for the quick start, the tests and game days.
//!
//! `GET /` answers hello, `GET /health` answers ok, `GET /metrics` exposes Prometheus metrics, and
//! `POST /fault/{crash,exit,hang,leak,cpu,slow,errors,unhealthy,reset}` produce every failure mode mend
//! must heal: a crash, a clean exit, a hang (blocked or SIGSTOPped), a memory leak, CPU burn, slow
//! replies, error responses and a failing health check.
//!
//! With `--upstream URL`, `GET /` also calls `URL` (another service, through mend's proxy) and answers
//! 502 when that call fails or answers 5xx: a chain of demos shows a fault travelling from callee to
//! callers. The call carries `x-mend-caller: NAME` (`--name`), from which the proxy learns the edge.

#![allow(clippy::print_stdout, clippy::print_stderr)] // A demo program reports on stdout/stderr.
#![allow(clippy::disallowed_methods)] // The demo measures latency and sleeps in its fault threads in real time.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::Parser;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serde::Deserialize;
use serde_json::json;
use tokio::signal::unix::{SignalKind, signal};

#[derive(Parser, Debug)]
#[command(name = "mend-demo", version, about = "A demo HTTP service with fault knobs, supervised by mend")]
struct Args {
    /// Port to listen on.
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: std::net::IpAddr,
    /// Wait this long before listening (to exercise startup probes), e.g. "2s".
    #[arg(long, value_parser = parse_duration)]
    startup_delay: Option<Duration>,
    /// Ignore SIGTERM (to exercise the stop timeout and SIGKILL).
    #[arg(long)]
    ignore_sigterm: bool,
    /// Exit with this code right after starting (to exercise crash loops).
    #[arg(long)]
    exit_immediately: Option<i32>,
    /// Exit with code 1 right after starting while this file exists (a broken deploy that a game day
    /// switches on by creating the file, to exercise crash loops).
    #[arg(long)]
    fail_if_exists: Option<std::path::PathBuf>,
    /// On `GET /`, also call this service (`http://HOST:PORT/PATH`), answering 502 when it fails.
    #[arg(long)]
    upstream: Option<hyper::Uri>,
    /// This service's name, sent to the upstream as `x-mend-caller`.
    #[arg(long, default_value = "mend-demo")]
    name: String,
    /// Send no `x-mend-caller` to the upstream (as a service that knows nothing of mend).
    #[arg(long)]
    anonymous: bool,
    /// Pass the `traceparent` and `tracestate` that arrived on to the upstream call (as a service whose
    /// HTTP library propagates W3C trace context), so that the upstream's span is a child of this one's.
    #[arg(long)]
    propagate_trace: bool,
    /// Answer this fraction (0..1) of `GET /` with 500 from the start (a bad release), as
    /// `POST /fault/errors` would.
    #[arg(long, value_parser = parse_fraction)]
    error_rate: Option<f64>,
    /// Delay every `GET /` by this long from the start (a slower release), e.g. "20ms".
    #[arg(long, value_parser = parse_duration)]
    delay: Option<Duration>,
}

fn parse_fraction(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(fraction) if (0.0..=1.0).contains(&fraction) => Ok(fraction),
        _ => Err(format!("{text:?} is not a fraction from 0 to 1")),
    }
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    mend_config::parse_duration(text)
}

#[derive(Default)]
struct Faults {
    slow: Option<(Duration, f64)>,
    errors: Option<(f64, u16)>,
    unhealthy: bool,
}

struct Demo {
    started: Instant,
    faults: Mutex<Faults>,
    /// Every handler waits forever while set: a hang that uses no CPU.
    blocked: AtomicBool,
    /// Every handler spins on the CPU while set: an overloaded replica that cannot answer.
    spinning: AtomicBool,
    cpu_generation: AtomicU64,
    leak_generation: AtomicU64,
    leaked: Mutex<Vec<Vec<u8>>>,
    leaked_bytes: AtomicU64,
    requests: Family<Vec<(&'static str, String)>, Counter>,
    latency: Histogram,
    upstream: Option<hyper::Uri>,
    /// Sent as `x-mend-caller`, unless anonymous.
    caller: Option<String>,
    propagate_trace: bool,
}

type Shared = Arc<Demo>;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = Args::parse();
    if let Some(code) = args.exit_immediately {
        eprintln!("mend-demo: exiting with code {code} as asked");
        std::process::exit(code);
    }
    if let Some(flag) = &args.fail_if_exists
        && flag.exists()
    {
        eprintln!("mend-demo: {} exists: refusing to start (a broken deploy)", flag.display());
        std::process::exit(1);
    }
    if let Some(delay) = args.startup_delay {
        println!("mend-demo: starting up for {delay:?}");
        tokio::time::sleep(delay).await;
    }
    let demo = Arc::new(Demo {
        started: Instant::now(),
        faults: Mutex::new(Faults {
            slow: args.delay.map(|delay| (delay, 1.0)),
            errors: args.error_rate.map(|rate| (rate, 500)),
            unhealthy: false,
        }),
        blocked: AtomicBool::new(false),
        spinning: AtomicBool::new(false),
        cpu_generation: AtomicU64::new(0),
        leak_generation: AtomicU64::new(0),
        leaked: Mutex::new(Vec::new()),
        leaked_bytes: AtomicU64::new(0),
        requests: Family::default(),
        latency: Histogram::new([0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
        upstream: args.upstream.clone(),
        caller: (!args.anonymous).then(|| args.name.clone()),
        propagate_trace: args.propagate_trace,
    });
    let app = Router::new()
        .route("/", get(hello))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/echo", axum::routing::any(echo))
        .route("/fault", get(fault_status))
        .route("/fault/crash", post(crash))
        .route("/fault/exit", post(exit))
        .route("/fault/hang", post(hang))
        .route("/fault/leak", post(leak))
        .route("/fault/cpu", post(cpu))
        .route("/fault/slow", post(slow))
        .route("/fault/errors", post(errors))
        .route("/fault/unhealthy", post(unhealthy))
        .route("/fault/reset", post(reset))
        .with_state(demo.clone());
    // Signal handlers are installed before the port is bound: once the replica answers (and looks ready),
    // a stop signal must already be handled, or it would kill the process with the default action.
    let (mut term, mut interrupt) = match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(term), Ok(interrupt)) => (term, interrupt),
        (Err(error), _) | (_, Err(error)) => {
            eprintln!("mend-demo: cannot handle stop signals: {error}");
            std::process::exit(1);
        }
    };
    let address = SocketAddr::new(args.host, args.port);
    let listener = match tokio::net::TcpListener::bind(address).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("mend-demo: cannot listen on {address}: {error}");
            std::process::exit(1);
        }
    };
    println!("mend-demo: listening on http://{address} (pid {})", std::process::id());
    let ignore_sigterm = args.ignore_sigterm;
    let shutdown = async move {
        loop {
            tokio::select! {
                _ = term.recv() => {}
                _ = interrupt.recv() => {}
            }
            if ignore_sigterm {
                println!("mend-demo: ignoring the stop signal as asked");
                continue;
            }
            println!("mend-demo: stopping gracefully");
            return;
        }
    };
    if let Err(error) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
        eprintln!("mend-demo: server error: {error}");
        std::process::exit(1);
    }
}

/// Waits forever while the hang fault blocks the service, or spins while it overloads it.
async fn blocked_gate(demo: &Demo) {
    // Spinning holds the worker thread on purpose: that is what an overloaded server looks like.
    while demo.spinning.load(Ordering::Relaxed) {
        std::hint::spin_loop();
    }
    if demo.blocked.load(Ordering::Relaxed) {
        std::future::pending::<()>().await;
    }
}

async fn hello(State(demo): State<Shared>, headers: header::HeaderMap) -> Response {
    blocked_gate(&demo).await;
    let start = Instant::now();
    let (slow, errors) = {
        let faults = demo.faults.lock().unwrap_or_else(|e| e.into_inner());
        (faults.slow, faults.errors)
    };
    if let Some((delay, fraction)) = slow
        && fastrand::f64() < fraction
    {
        tokio::time::sleep(delay).await;
    }
    let response = match errors {
        Some((rate, status)) if fastrand::f64() < rate => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (status, "injected error\n").into_response()
        }
        _ => match &demo.upstream {
            None => format!("hello from mend-demo (pid {})\n", std::process::id()).into_response(),
            Some(upstream) => match call(upstream, demo.caller.as_deref(), demo.propagate_trace.then_some(&headers))
                .await
            {
                Ok(status) if status < 500 => {
                    format!("hello from mend-demo (pid {}), upstream {status}\n", std::process::id()).into_response()
                }
                Ok(status) => (StatusCode::BAD_GATEWAY, format!("upstream answered {status}\n")).into_response(),
                Err(error) => (StatusCode::BAD_GATEWAY, format!("upstream failed: {error}\n")).into_response(),
            },
        },
    };
    let code = response.status().as_u16().to_string();
    demo.requests.get_or_create(&vec![("code", code)]).inc();
    demo.latency.observe(start.elapsed().as_secs_f64());
    response
}

/// Calls `GET upstream` with `x-mend-caller: caller` and the trace context of `incoming` when given (a
/// connection per call, 5 s at most); its status.
async fn call(
    upstream: &hyper::Uri,
    caller: Option<&str>,
    incoming: Option<&header::HeaderMap>,
) -> Result<u16, String> {
    let authority = upstream.authority().ok_or("the upstream URL has no host")?.as_str().to_owned();
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(&authority).await.map_err(|e| e.to_string())?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        let mut request =
            hyper::Request::get(upstream.path_and_query().map_or("/", |p| p.as_str())).header(header::HOST, &authority);
        if let Some(caller) = caller {
            request = request.header("x-mend-caller", caller);
        }
        for name in ["traceparent", "tracestate"] {
            if let Some(value) = incoming.and_then(|headers| headers.get(name)) {
                request = request.header(name, value);
            }
        }
        let request = request.body(http_body_util::Empty::<bytes::Bytes>::new()).map_err(|e| e.to_string())?;
        let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        // Read the body to its end so that the upstream's answer is complete.
        use http_body_util::BodyExt;
        let _ = response.into_body().collect().await;
        Ok::<u16, String>(status)
    };
    match tokio::time::timeout(Duration::from_secs(5), exchange).await {
        Ok(result) => result,
        Err(_) => Err("no answer within 5s".to_owned()),
    }
}

/// Echoes what arrived: method, path, query, headers and the body's length (counted as it streams in).
async fn echo(State(demo): State<Shared>, request: axum::extract::Request) -> Response {
    blocked_gate(&demo).await;
    use http_body_util::BodyExt;
    let (parts, mut body) = request.into_parts();
    let mut body_bytes: u64 = 0;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => body_bytes += frame.data_ref().map_or(0, |data| data.len() as u64),
            Err(error) => return (StatusCode::BAD_REQUEST, format!("reading the body: {error}\n")).into_response(),
        }
    }
    let headers: serde_json::Map<String, serde_json::Value> = parts
        .headers
        .iter()
        .map(|(name, value)| (name.as_str().to_owned(), json!(value.to_str().unwrap_or("<binary>"))))
        .collect();
    Json(json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "headers": headers,
        "body_bytes": body_bytes,
        "pid": std::process::id(),
    }))
    .into_response()
}

async fn health(State(demo): State<Shared>) -> Response {
    blocked_gate(&demo).await;
    let unhealthy = demo.faults.lock().unwrap_or_else(|e| e.into_inner()).unhealthy;
    if unhealthy { (StatusCode::SERVICE_UNAVAILABLE, "unhealthy\n").into_response() } else { "ok\n".into_response() }
}

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    pages * 4096
}

async fn metrics(State(demo): State<Shared>) -> Response {
    blocked_gate(&demo).await;
    let mut registry = Registry::default();
    registry.register("mend_demo_requests", "Requests to / by status code", demo.requests.clone());
    registry.register("mend_demo_request_duration_seconds", "Latency of requests to /", demo.latency.clone());
    let rss = Gauge::<i64>::default();
    rss.set(resident_bytes() as i64);
    registry.register("process_resident_memory_bytes", "Resident memory", rss);
    let leaked = Gauge::<i64>::default();
    leaked.set(demo.leaked_bytes.load(Ordering::Relaxed) as i64);
    registry.register("mend_demo_leaked_bytes", "Memory held by the leak fault", leaked);
    let uptime = Gauge::<f64, AtomicU64>::default();
    uptime.set(demo.started.elapsed().as_secs_f64());
    registry.register("mend_demo_uptime_seconds", "Seconds since start", uptime);
    let mut body = String::new();
    let _ = encode(&mut body, &registry);
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}

async fn fault_status(State(demo): State<Shared>) -> Json<serde_json::Value> {
    let faults = demo.faults.lock().unwrap_or_else(|e| e.into_inner());
    Json(json!({
        "slow_ms": faults.slow.map(|(d, _)| d.as_millis() as u64),
        "error_rate": faults.errors.map(|(rate, _)| rate),
        "unhealthy": faults.unhealthy,
        "leaked_bytes": demo.leaked_bytes.load(Ordering::Relaxed),
    }))
}

#[derive(Deserialize)]
struct CodeParams {
    code: Option<i32>,
}

async fn crash() -> &'static str {
    // Abort on a separate thread once the response had a chance to leave.
    std::thread::spawn(|| {
        std::thread::sleep(Duration::from_millis(20));
        eprintln!("mend-demo: crashing (abort) as asked");
        std::process::abort();
    });
    "crashing\n"
}

async fn exit(Query(params): Query<CodeParams>) -> String {
    let code = params.code.unwrap_or(0);
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        eprintln!("mend-demo: exiting with code {code} as asked");
        std::process::exit(code);
    });
    format!("exiting with code {code}\n")
}

#[derive(Deserialize)]
struct HangParams {
    mode: Option<String>,
}

async fn hang(State(demo): State<Shared>, Query(params): Query<HangParams>) -> Response {
    match params.mode.as_deref().unwrap_or("block") {
        "block" => {
            demo.blocked.store(true, Ordering::Relaxed);
            "every request now hangs\n".into_response()
        }
        "spin" => {
            demo.spinning.store(true, Ordering::Relaxed);
            "every request now spins on the CPU\n".into_response()
        }
        "stop" => {
            std::thread::spawn(|| {
                std::thread::sleep(Duration::from_millis(20));
                let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGSTOP);
            });
            "stopping myself (SIGSTOP)\n".into_response()
        }
        other => {
            (StatusCode::BAD_REQUEST, format!("unknown hang mode {other:?} (block, spin or stop)\n")).into_response()
        }
    }
}

#[derive(Deserialize)]
struct LeakParams {
    mib_per_sec: Option<f64>,
    max_mib: Option<f64>,
}

async fn leak(State(demo): State<Shared>, Query(params): Query<LeakParams>) -> Response {
    let rate = params.mib_per_sec.unwrap_or(1.0);
    if !(rate > 0.0 && rate <= 1024.0) {
        return (StatusCode::BAD_REQUEST, "mib_per_sec must be in (0, 1024]\n").into_response();
    }
    let max_bytes = params.max_mib.map(|mib| (mib * 1048576.0) as u64);
    let generation = demo.leak_generation.fetch_add(1, Ordering::Relaxed) + 1;
    let leaker = demo.clone();
    tokio::spawn(async move {
        let chunk = ((rate * 1048576.0) / 10.0) as usize;
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        while leaker.leak_generation.load(Ordering::Relaxed) == generation {
            tick.tick().await;
            let held = leaker.leaked_bytes.load(Ordering::Relaxed);
            if max_bytes.is_some_and(|max| held + chunk as u64 > max) {
                continue;
            }
            // Filled, so the pages are resident, not just reserved.
            let block = vec![0xA5_u8; chunk];
            leaker.leaked.lock().unwrap_or_else(|e| e.into_inner()).push(block);
            leaker.leaked_bytes.fetch_add(chunk as u64, Ordering::Relaxed);
        }
    });
    format!("leaking {rate} MiB/s\n").into_response()
}

#[derive(Deserialize)]
struct CpuParams {
    threads: Option<u32>,
    #[serde(rename = "for")]
    duration: Option<String>,
}

async fn cpu(State(demo): State<Shared>, Query(params): Query<CpuParams>) -> Response {
    let threads = params.threads.unwrap_or(1).clamp(1, 64);
    let duration = match params.duration.as_deref().map(parse_duration).transpose() {
        Ok(duration) => duration.unwrap_or(Duration::from_secs(60)),
        Err(error) => return (StatusCode::BAD_REQUEST, format!("{error}\n")).into_response(),
    };
    let generation = demo.cpu_generation.fetch_add(1, Ordering::Relaxed) + 1;
    for _ in 0..threads {
        let burner = demo.clone();
        std::thread::spawn(move || {
            let until = Instant::now() + duration;
            let mut x: u64 = 1;
            while Instant::now() < until && burner.cpu_generation.load(Ordering::Relaxed) == generation {
                for _ in 0..10_000 {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                }
                std::hint::black_box(x);
            }
        });
    }
    format!("burning {threads} thread(s) for {duration:?}\n").into_response()
}

#[derive(Deserialize)]
struct SlowParams {
    delay: Option<String>,
    percent: Option<f64>,
}

async fn slow(State(demo): State<Shared>, Query(params): Query<SlowParams>) -> Response {
    let delay = match parse_duration(params.delay.as_deref().unwrap_or("500ms")) {
        Ok(delay) => delay,
        Err(error) => return (StatusCode::BAD_REQUEST, format!("{error}\n")).into_response(),
    };
    let fraction = params.percent.unwrap_or(100.0) / 100.0;
    demo.faults.lock().unwrap_or_else(|e| e.into_inner()).slow = Some((delay, fraction));
    format!("slowing {}% of requests by {delay:?}\n", fraction * 100.0).into_response()
}

#[derive(Deserialize)]
struct ErrorParams {
    rate: Option<f64>,
    status: Option<u16>,
}

async fn errors(State(demo): State<Shared>, Query(params): Query<ErrorParams>) -> Response {
    let rate = params.rate.unwrap_or(1.0);
    if !(0.0..=1.0).contains(&rate) {
        return (StatusCode::BAD_REQUEST, "rate must be in [0, 1]\n").into_response();
    }
    let status = params.status.unwrap_or(500);
    demo.faults.lock().unwrap_or_else(|e| e.into_inner()).errors = Some((rate, status));
    format!("answering {status} to {}% of requests\n", rate * 100.0).into_response()
}

async fn unhealthy(State(demo): State<Shared>) -> &'static str {
    demo.faults.lock().unwrap_or_else(|e| e.into_inner()).unhealthy = true;
    "health checks now fail\n"
}

async fn reset(State(demo): State<Shared>) -> &'static str {
    *demo.faults.lock().unwrap_or_else(|e| e.into_inner()) = Faults::default();
    demo.blocked.store(false, Ordering::Relaxed);
    demo.cpu_generation.fetch_add(1, Ordering::Relaxed);
    demo.leak_generation.fetch_add(1, Ordering::Relaxed);
    demo.leaked.lock().unwrap_or_else(|e| e.into_inner()).clear();
    demo.leaked_bytes.store(0, Ordering::Relaxed);
    "faults cleared\n"
}
