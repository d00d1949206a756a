//! Permits per second through etcd: one host takes and releases fleet permits back to back (each a read
//! of the window's budget and the service's permits, the transaction, then the release) for a while,
//! against the etcd at the given endpoint. BENCHMARKS.md has the figure and the command.
//!
//! `cargo run -p mend-fleet --example permits -- http://127.0.0.1:23790 10`; over TLS, with the CA file and
//! optionally a client certificate and key: `-- https://127.0.0.1:23791 10 ca.pem client.pem client-key.pem`
//! (`bench/etcd_tls.sh` makes them, starts etcd and runs both).

#![allow(clippy::print_stdout, clippy::disallowed_methods)] // A benchmark: prints its figure, times in real time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mend_fleet::{FleetHandle, PermitAnswer, PermitRequest};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: permits ETCD_ENDPOINT [SECONDS [CA_FILE [CERT_FILE KEY_FILE]]]";
    let endpoint = args.next().ok_or(usage)?;
    let seconds: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(10);
    let tls = args.next().map(|ca_file| mend_config::FleetTls {
        ca_file: ca_file.into(),
        identity: args.next().zip(args.next()).map(|(cert, key)| (cert.into(), key.into())),
        server_name: None,
    });
    let mut config = mend_config::Fleet::with_endpoints(vec![endpoint]);
    config.tls = tls;
    config.host = Some("bench".to_owned());
    config.prefix = format!("/mend-bench-{}", std::process::id());
    config.max_actions_per_window = 100_000;
    config.lease_ttl = Duration::from_secs(10);
    let clock: Arc<dyn mend_types::Clock> = Arc::new(mend_types::SystemClock);
    let (fleet, task) = FleetHandle::start(config, clock, Box::new(|| (Vec::new(), Vec::new())))?;
    let request = PermitRequest { service: "web".to_owned(), action: "restart".to_owned(), disrupts: true };
    // Registered first: a permit needs the host's lease.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut action = 0u64;
    loop {
        action += 1;
        match fleet.permit(&request, action).await {
            PermitAnswer::Granted(permit) => {
                fleet.release(permit).await;
                break;
            }
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(100)).await,
            other => return Err(format!("no permit: {other:?}").into()),
        }
    }
    let started = Instant::now();
    let mut n_granted = 0u64;
    while started.elapsed() < Duration::from_secs(seconds) {
        action += 1;
        match fleet.permit(&request, action).await {
            PermitAnswer::Granted(permit) => {
                fleet.release(permit).await;
                n_granted += 1;
            }
            other => return Err(format!("permit {action} not granted: {other:?}").into()),
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "{n_granted} permits taken and released in {elapsed:.1} s: {:.0} per second ({:.2} ms each)",
        n_granted as f64 / elapsed,
        elapsed * 1000.0 / n_granted as f64
    );
    fleet.leave().await;
    task.abort();
    Ok(())
}
