//! A stand-alone mend-proxy for benchmarks: fixed upstreams from the command line, driven over stdin.
//!
//! ```text
//! cargo run --release -p mend-proxy --example proxy -- --listen 127.0.0.1:8000 \
//!     --upstream 127.0.0.1:8001 --upstream 127.0.0.1:8002 [--threads 1] [--pin-loops] [--trace-ratio 0.01]
//! ```
//!
//! With `--threads N` (N > 1) the proxy runs N event loops of its own; `--pin-loops` pins event loop `i`
//! to the `i`-th CPU the process may run on (what nginx's `worker_cpu_affinity` does for its workers).
//!
//! Commands on stdin, one per line (replica index `I` counts from 0 in `--upstream` order):
//! `drain I` (drain, then print the outcome), `down I` (remove from the table), `up I` (add back as a new
//! generation), `stats` (print totals). The real configuration is wired by mend; this is a test rig.
#![allow(clippy::print_stdout, clippy::print_stderr)] // A command-line example reports on stdout.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mend_proxy::{Backend, BackendId, Proxy, ProxyConfig, ProxyHandle, Release, RouteTable};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::watch;

struct Args {
    listen: SocketAddr,
    upstreams: Vec<SocketAddr>,
    threads: usize,
    pin_loops: bool,
    /// Trace with this head-sampling ratio (spans into an in-memory store, no export); off without it.
    trace_ratio: Option<f64>,
}

fn parse_args() -> Result<Args, String> {
    let mut listen = None;
    let mut upstreams = Vec::new();
    let mut threads = 1;
    let mut pin_loops = false;
    let mut trace_ratio = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--pin-loops" {
            pin_loops = true;
            continue;
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--listen" => listen = Some(value.parse().map_err(|error| format!("--listen {value}: {error}"))?),
            "--upstream" => upstreams.push(value.parse().map_err(|error| format!("--upstream {value}: {error}"))?),
            "--threads" => threads = value.parse().map_err(|error| format!("--threads {value}: {error}"))?,
            "--trace-ratio" => {
                trace_ratio = Some(value.parse().map_err(|error| format!("--trace-ratio {value}: {error}"))?);
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    let listen = listen.ok_or("--listen is required")?;
    Ok(Args { listen, upstreams, threads, pin_loops, trace_ratio })
}

fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(error) => {
            eprintln!("proxy: {error}");
            std::process::exit(2);
        }
    };
    let runtime = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(args.threads).enable_all().build()
    };
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("proxy: cannot start the runtime: {error}");
            std::process::exit(1);
        }
    };
    runtime.block_on(run(args));
    // The stdin reader sits on a blocking thread until stdin closes; do not wait for it.
    runtime.shutdown_background();
}

struct Rig {
    upstreams: Vec<SocketAddr>,
    generations: Vec<Option<u64>>,
    routes: watch::Sender<Arc<RouteTable>>,
}

impl Rig {
    fn id(&self, idx: usize) -> Option<BackendId> {
        let generation = (*self.generations.get(idx)?)?;
        Some(BackendId { release: Release::Stable, index: idx as u32, generation })
    }

    fn publish(&self) {
        let backends = (0..self.upstreams.len())
            .filter_map(|idx| Some(Backend { id: self.id(idx)?, addr: self.upstreams[idx], weight: 1 }))
            .collect();
        self.routes.send_replace(Arc::new(RouteTable { backends, canary: None }));
    }
}

async fn run(args: Args) {
    let (routes, routes_rx) = watch::channel(Arc::new(RouteTable::default()));
    let mut rig = Rig { generations: vec![Some(1); args.upstreams.len()], upstreams: args.upstreams, routes };
    rig.publish();
    let mut config = ProxyConfig::new(args.listen);
    // Kept alive as long as the proxy: the span store and its collector task.
    let tracing = args.trace_ratio.map(|ratio| (mend_trace::Tracing::start(16 << 20, None), ratio));
    if let Some((tracing, ratio)) = &tracing {
        config.tracing = Some(mend_proxy::ProxyTracing {
            service: "bench".to_owned(),
            sampling: mend_trace::Sampling { ratio: *ratio, ..mend_trace::Sampling::default() },
            recorder: tracing.recorder(),
            unix_nanos_at_bind: 0,
        });
    }
    let proxy = match Proxy::bind(config, routes_rx).await {
        Ok(proxy) => proxy,
        Err(error) => {
            eprintln!("proxy: {error}");
            std::process::exit(1);
        }
    };
    if args.pin_loops {
        // A new thread names itself once it runs: look again until every event loop was found.
        for _ in 0..100 {
            if pin_event_loops() >= args.threads {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    println!("listening on {} (pid {})", proxy.local_addr(), std::process::id());
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            line = lines.next_line() => match line {
                Ok(Some(line)) => command(&proxy, &mut rig, line.trim()).await,
                // stdin closed: keep serving until a signal.
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                    break;
                }
            },
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    proxy.shutdown().await;
}

/// Pins each `mend-proxy-<i>` thread to the `i`-th CPU of the process's affinity mask; returns how many
/// it pinned.
fn pin_event_loops() -> usize {
    use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
    use nix::unistd::Pid;
    let Ok(allowed) = sched_getaffinity(Pid::from_raw(std::process::id() as i32)) else { return 0 };
    let cpus: Vec<usize> = (0..CpuSet::count()).filter(|&cpu| allowed.is_set(cpu).unwrap_or(false)).collect();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return 0 };
    let mut n_pinned = 0;
    for task in tasks.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        let Some(loop_idx) = comm.trim().strip_prefix("mend-proxy-").and_then(|idx| idx.parse::<usize>().ok()) else {
            continue;
        };
        let Some(tid) = task.file_name().to_str().and_then(|tid| tid.parse::<i32>().ok()) else { continue };
        let mut cpuset = CpuSet::new();
        if cpus.is_empty() || cpuset.set(cpus[loop_idx % cpus.len()]).is_err() {
            continue;
        }
        match sched_setaffinity(Pid::from_raw(tid), &cpuset) {
            Ok(()) => n_pinned += 1,
            Err(error) => eprintln!("proxy: cannot pin event loop {loop_idx}: {error}"),
        }
    }
    n_pinned
}

async fn command(proxy: &ProxyHandle, rig: &mut Rig, line: &str) {
    let mut words = line.split_whitespace();
    let verb = words.next().unwrap_or("");
    let idx: Option<usize> = words.next().and_then(|word| word.parse().ok());
    match (verb, idx) {
        ("drain", Some(idx)) => match rig.id(idx) {
            Some(id) => println!("drain {idx}: {:?}", proxy.drain(id, Duration::from_secs(30)).await),
            None => println!("drain {idx}: not in the table"),
        },
        ("down", Some(idx)) if idx < rig.generations.len() => {
            rig.generations[idx] = None;
            rig.publish();
            println!("down {idx}: ok");
        }
        ("up", Some(idx)) if idx < rig.generations.len() => {
            static NEXT_GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(2);
            rig.generations[idx] = Some(NEXT_GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
            rig.publish();
            println!("up {idx}: ok");
        }
        ("stats", _) => {
            let stats = proxy.stats();
            let total = &stats.total;
            println!(
                "stats: 2xx={} 4xx={} 5xx={} retries={} denied={} bad_gateway={} no_backend={} timeouts={}",
                total.status_2xx,
                total.status_4xx,
                total.status_5xx,
                stats.retries,
                stats.retries_denied,
                total.bad_gateway,
                total.no_backend,
                total.gateway_timeouts
            );
            for backend in &stats.backends {
                println!(
                    "  {} {}: attempts={} connect_failures={} resets={} timeouts={} ejections={} in_flight={}",
                    backend.id,
                    backend.addr,
                    backend.attempts.responses(),
                    backend.attempts.connect_failures,
                    backend.attempts.resets,
                    backend.attempts.timeouts,
                    backend.ejections,
                    backend.in_flight
                );
            }
        }
        _ => println!("unknown command: {line}"),
    }
}
