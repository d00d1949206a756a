//! The game day's built-in HTTP load generator: GET one loopback URL at a bounded rate over a bounded
//! number of keep-alive connections, for a bounded time, recording every request's start, latency and
//! outcome.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Most requests recorded (beyond, requests are still sent and counted, not kept one by one).
const MAX_SAMPLES: usize = 2_000_000;

/// One request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Sample {
    /// Seconds after the game day's start when it was sent.
    pub(crate) at: f64,
    /// Milliseconds until the whole answer (or the failure).
    pub(crate) latency_ms: f64,
    /// Answered below 500 within the timeout.
    pub(crate) ok: bool,
}

/// What the load run saw.
#[derive(Debug, Default)]
pub(crate) struct Recorded {
    pub(crate) samples: Vec<Sample>,
    /// Ticks at which every connection was busy: the target was too slow for the rate.
    pub(crate) skipped: u64,
}

/// A load run in progress.
pub(crate) struct LoadRun {
    recorded: Arc<Mutex<Recorded>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Starts GET `path` on `address` (loopback) at `rate`/s over `concurrency` connections until `until`
/// (seconds after `t0`).
pub(crate) fn start(
    address: SocketAddr,
    path: String,
    rate: u32,
    concurrency: u32,
    timeout: Duration,
    t0: Instant,
    until: Duration,
) -> LoadRun {
    assert!(address.ip().is_loopback(), "validated: game-day load goes to loopback only");
    let recorded = Arc::new(Mutex::new(Recorded::default()));
    let (tx, rx) = mpsc::channel::<()>(concurrency as usize);
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let mut tasks = Vec::new();
    let pacer_recorded = recorded.clone();
    tasks.push(tokio::spawn(async move {
        let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate.max(1))));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let end = t0 + until;
        loop {
            ticker.tick().await;
            if Instant::now() >= end {
                break;
            }
            if tx.try_send(()).is_err() {
                lock(&pacer_recorded).skipped += 1;
            }
        }
    }));
    for _ in 0..concurrency {
        let (rx, recorded, path) = (rx.clone(), recorded.clone(), path.clone());
        tasks.push(tokio::spawn(async move {
            let mut connection: Option<hyper::client::conn::http1::SendRequest<http_body_util::Full<Bytes>>> = None;
            loop {
                if rx.lock().await.recv().await.is_none() {
                    break;
                }
                let sent = Instant::now();
                let attempt = tokio::time::timeout(timeout, request(&mut connection, address, &path)).await;
                let ok = matches!(attempt, Ok(Ok(status)) if status < 500);
                if !matches!(attempt, Ok(Ok(_))) {
                    connection = None;
                }
                let sample = Sample {
                    at: sent.duration_since(t0).as_secs_f64(),
                    latency_ms: sent.elapsed().as_secs_f64() * 1000.0,
                    ok,
                };
                let mut recorded = lock(&recorded);
                if recorded.samples.len() < MAX_SAMPLES {
                    recorded.samples.push(sample);
                }
            }
        }));
    }
    LoadRun { recorded, tasks }
}

fn lock(recorded: &Mutex<Recorded>) -> std::sync::MutexGuard<'_, Recorded> {
    recorded.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

async fn request(
    connection: &mut Option<hyper::client::conn::http1::SendRequest<http_body_util::Full<Bytes>>>,
    address: SocketAddr,
    path: &str,
) -> Result<u16, String> {
    if connection.as_ref().is_none_or(|sender| sender.is_closed()) {
        let stream = TcpStream::connect(address).await.map_err(|e| e.to_string())?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        *connection = Some(sender);
    }
    let sender = connection.as_mut().ok_or("no connection")?;
    sender.ready().await.map_err(|e| e.to_string())?;
    let request = Request::get(path)
        .header(hyper::header::HOST, address.to_string())
        .body(http_body_util::Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    response.into_body().collect().await.map_err(|e| e.to_string())?;
    Ok(status)
}

impl LoadRun {
    /// Waits for the run's end (its pacer stops at `until`; requests in flight finish within their
    /// timeout) and hands over what it recorded, in send order.
    pub(crate) async fn finish(self, timeout: Duration) -> Recorded {
        let mut tasks = self.tasks.into_iter();
        if let Some(pacer) = tasks.next() {
            let _ = pacer.await;
        }
        let workers: Vec<_> = tasks.collect();
        let wait_all = async {
            for worker in &workers {
                while !worker.is_finished() {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        };
        if tokio::time::timeout(timeout + Duration::from_secs(1), wait_all).await.is_err() {
            for worker in &workers {
                worker.abort();
            }
        }
        let mut recorded = std::mem::take(&mut *lock(&self.recorded));
        recorded.samples.sort_by(|a, b| a.at.total_cmp(&b.at));
        recorded
    }

    /// Requests recorded so far and how many failed, for progress lines.
    pub(crate) fn so_far(&self) -> (usize, usize) {
        let recorded = lock(&self.recorded);
        (recorded.samples.len(), recorded.samples.iter().filter(|s| !s.ok).count())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real loopback server answering 200, then 503 once told to: the generator stays at its rate and
    /// counts what failed.
    #[tokio::test]
    async fn paces_requests_and_records_failures() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let failing = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let server_failing = failing.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let failing = server_failing.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |_request| {
                        let status = if failing.load(std::sync::atomic::Ordering::Relaxed) { 503 } else { 200 };
                        async move {
                            hyper::Response::builder()
                                .status(status)
                                .body(http_body_util::Full::new(Bytes::from_static(b"ok")))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        let t0 = Instant::now();
        let run = start(address, "/".into(), 200, 4, Duration::from_secs(2), t0, Duration::from_millis(1000));
        // The positive event: requests flow before the server turns to failing.
        while run.so_far().0 < 50 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        failing.store(true, std::sync::atomic::Ordering::Relaxed);
        let recorded = run.finish(Duration::from_secs(2)).await;
        let n = recorded.samples.len();
        let failed = recorded.samples.iter().filter(|s| !s.ok).count();
        // 200/s for 1 s: about 200 sent (a loaded machine skips some ticks, never exceeds the rate).
        assert!((100..=201).contains(&n), "{n} requests");
        assert!(failed > 0 && failed < n, "{failed} of {n} failed");
        assert!(recorded.samples.windows(2).all(|w| w[0].at <= w[1].at));
        assert!(recorded.samples.iter().all(|s| s.at < 1.0 && s.latency_ms >= 0.0));
    }
}
