//! Where the proxy serves: the caller's runtime when it has one thread, else one event loop per worker
//! thread, nginx style: each its own thread with a current-thread runtime and its own `SO_REUSEPORT`
//! listener, so that a client connection, its requests and their upstream I/O all stay on one thread.
//!
//! In a multi-thread runtime, connection tasks were stolen between workers and woken across threads;
//! on the 2-core benchmark machine the per-worker loops served 10-17 % more requests per second at a
//! lower p99 and about 1.5 µs less CPU per request (see `bench/proxy/RESULTS.md`).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpSocket};
use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::proxy::Shared;
use crate::server::{self, Phase};
use crate::stats::{N_SHARDS, pin_thread_shard};

/// Event loops the proxy runs for the current runtime: its worker threads in a multi-thread runtime (at
/// most one per shard of the counters and pools), else 1, meaning the caller's runtime itself.
pub(crate) fn event_loops() -> usize {
    let handle = Handle::current();
    match handle.runtime_flavor() {
        RuntimeFlavor::MultiThread => handle.metrics().num_workers().clamp(1, N_SHARDS),
        _ => 1,
    }
}

/// Binds `n_loops` listeners to `addr` (sharing the port through `SO_REUSEPORT` when there are several;
/// port 0 picks one free port for all).
pub(crate) fn bind(addr: SocketAddr, n_loops: usize) -> io::Result<(Vec<TcpListener>, SocketAddr)> {
    let mut listeners = Vec::with_capacity(n_loops);
    let mut local_addr = addr;
    for _ in 0..n_loops {
        let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
        socket.set_reuseaddr(true)?;
        if n_loops > 1 {
            socket.set_reuseport(true)?;
        }
        socket.bind(local_addr)?;
        let listener = socket.listen(1024)?;
        local_addr = listener.local_addr()?;
        listeners.push(listener);
    }
    Ok((listeners, local_addr))
}

/// Starts serving on `listeners`: on the caller's runtime for one, else on one thread each. The returned
/// task ends when every accept loop has stopped; `done` closes when every connection has ended.
pub(crate) fn serve(
    shared: &Arc<Shared>,
    listeners: Vec<TcpListener>,
    phase: &watch::Receiver<Phase>,
    done: &mpsc::Sender<()>,
) -> io::Result<JoinHandle<()>> {
    let mut listeners = listeners;
    if listeners.len() == 1
        && let Some(listener) = listeners.pop()
    {
        return Ok(tokio::spawn(server::accept_loop(shared.clone(), listener, phase.clone(), done.clone())));
    }
    let mut stopped = Vec::with_capacity(listeners.len());
    for (loop_idx, listener) in listeners.into_iter().enumerate() {
        // Registered again with the event loop's own runtime on its thread.
        let listener = listener.into_std()?;
        let (stopped_tx, stopped_rx) = oneshot::channel();
        stopped.push(stopped_rx);
        let (shared, phase, done) = (shared.clone(), phase.clone(), done.clone());
        std::thread::Builder::new()
            .name(format!("mend-proxy-{loop_idx}"))
            .spawn(move || event_loop(loop_idx, shared, listener, phase, done, stopped_tx))?;
    }
    Ok(tokio::spawn(async move {
        for stopped_rx in stopped {
            let _ = stopped_rx.await;
        }
    }))
}

/// One event loop: accepts until the phase leaves `Running`, then keeps serving until its connections
/// have ended (they close at once in `Closing`).
fn event_loop(
    loop_idx: usize,
    shared: Arc<Shared>,
    listener: std::net::TcpListener,
    phase: watch::Receiver<Phase>,
    done: mpsc::Sender<()>,
    stopped: oneshot::Sender<()>,
) {
    pin_thread_shard(loop_idx);
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(loop_idx, error = %error, "cannot start a proxy event loop");
            return;
        }
    };
    runtime.block_on(async move {
        let listener = match TcpListener::from_std(listener) {
            Ok(listener) => listener,
            Err(error) => {
                tracing::error!(loop_idx, error = %error, "cannot register a proxy listener");
                return;
            }
        };
        // Connection tasks hold clones of `local_done`; its receiver sees the channel close when the last
        // one has ended. `done` is held until then, which tells the handle.
        let (local_done, mut connections_ended) = mpsc::channel::<()>(1);
        server::accept_loop(shared, listener, phase, local_done).await;
        let _ = stopped.send(());
        let _ = connections_ended.recv().await;
        drop(done);
    });
}
