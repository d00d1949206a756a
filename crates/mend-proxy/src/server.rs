//! The client side: accept loop, one task per connection, idle and slow-header timeouts, graceful and
//! forced shutdown.

use std::future::{Future, poll_fn};
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use crate::clock::Nanos;
use crate::headers::ForwardedValues;
use crate::proxy::Shared;

/// Where the proxy is in its life, broadcast to the accept loop and every connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Running,
    /// Stop accepting; finish in-flight requests, close idle connections.
    Draining,
    /// Close every connection now.
    Closing,
}

/// What the proxy knows about one client connection.
#[derive(Debug)]
pub(crate) struct ConnState {
    /// The proxy's state, reached through the connection so that a request clones only this connection's
    /// `Arc` (a per-connection cache line), not the proxy-wide one every request on every thread writes.
    pub(crate) shared: Arc<Shared>,
    pub(crate) forwarded: ForwardedValues,
    /// Requests in progress (until their response body ends).
    in_flight: AtomicU32,
    /// When the connection last became idle.
    idle_since: AtomicU64,
    /// When the first byte of the next request head arrived (0 = none yet).
    head_started: AtomicU64,
    /// When the request in progress stops waiting for response headers (0 = not waiting). The connection
    /// task's timer wakes the task then, so the request needs no timer of its own (registering one in
    /// the shared timer wheel and removing it again cost two wheel updates per request).
    request_deadline: AtomicU64,
    /// The proxy clock as of the connection task's latest wake-up.
    now: AtomicU64,
    /// Set when the client speaks HTTP/2: its requests run in tasks of their own (one per stream), so
    /// they read the clock themselves and wait for deadlines on timers of their own, and the connection
    /// has no request head to time.
    multiplexed: AtomicBool,
}

impl ConnState {
    /// The proxy clock as of the connection task's latest wake-up. What a request does within one poll of
    /// its connection (read the head, pick a backend, finish the response) reads this rather than the
    /// clock, which costs a vDSO call per read; the time stamps are exact to the wake-up.
    pub(crate) fn now(&self) -> Nanos {
        if self.multiplexed.load(Relaxed) {
            return self.shared.clock.now();
        }
        Nanos(self.now.load(Relaxed))
    }

    /// Resolves once the proxy clock reaches `deadline`. For an HTTP/1.1 connection, only for the request
    /// future of this connection: it is polled inside the connection task, whose timer is armed for the
    /// deadline published here (and which reads the clock on every wake-up). A request of an HTTP/2
    /// connection runs in a task of its own and gets a timer of its own.
    pub(crate) fn deadline(&self, deadline: Nanos) -> Deadline<'_> {
        if self.multiplexed.load(Relaxed) {
            return Deadline::Timer(Box::pin(tokio::time::sleep_until(self.shared.clock.instant(deadline))));
        }
        self.request_deadline.store(deadline.0.max(1), Relaxed);
        Deadline::Connection(self, deadline)
    }

    /// The request stopped waiting for a deadline.
    pub(crate) fn clear_deadline(&self) {
        if !self.multiplexed.load(Relaxed) {
            self.request_deadline.store(0, Relaxed);
        }
    }
}

/// A request's deadline: see [`ConnState::deadline`].
pub(crate) enum Deadline<'a> {
    /// Woken by the connection task's timer.
    Connection(&'a ConnState, Nanos),
    /// A timer of its own.
    Timer(Pin<Box<tokio::time::Sleep>>),
}

impl Future for Deadline<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match &mut *self {
            Self::Connection(conn, deadline) => {
                if conn.now() >= *deadline {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            }
            Self::Timer(sleep) => sleep.as_mut().poll(cx),
        }
    }
}

/// Marks a connection busy while a request is in progress; dropped with the response body.
#[derive(Debug)]
pub(crate) struct ActivityGuard {
    conn: Arc<ConnState>,
}

impl ActivityGuard {
    pub(crate) fn new(conn: Arc<ConnState>) -> Self {
        conn.in_flight.fetch_add(1, Relaxed);
        Self { conn }
    }

    /// The proxy this request belongs to.
    pub(crate) fn shared(&self) -> &Shared {
        &self.conn.shared
    }

    /// The proxy clock as of the connection task's latest wake-up.
    pub(crate) fn now(&self) -> Nanos {
        self.conn.now()
    }
}

impl Drop for ActivityGuard {
    fn drop(&mut self) {
        if self.conn.in_flight.fetch_sub(1, Relaxed) == 1 {
            self.conn.head_started.store(0, Relaxed);
            self.conn.idle_since.store(self.conn.now().0, Relaxed);
        }
    }
}

/// The client socket, noting when a new request head starts arriving, and whether the client speaks
/// HTTP/2.
struct ClientStream {
    inner: TcpStream,
    conn: Arc<ConnState>,
    /// Bytes of the HTTP/2 connection preface's start (`PRI `) seen so far; [`SNIFFED`] once decided.
    sniffed: usize,
}

/// The start of the HTTP/2 connection preface (RFC 9113 §3.4); no HTTP/1.1 method is `PRI`.
const PREFACE_START: &[u8] = b"PRI ";
const SNIFFED: usize = usize::MAX;

impl AsyncRead for ClientStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            if this.sniffed != SNIFFED {
                this.sniff(&buf.filled()[before..]);
            }
            if this.conn.in_flight.load(Relaxed) == 0
                && this.conn.head_started.load(Relaxed) == 0
                && !this.conn.multiplexed.load(Relaxed)
            {
                this.conn.head_started.store(this.conn.now().0.max(1), Relaxed);
            }
        }
        result
    }
}

impl ClientStream {
    /// Looks at the connection's first bytes for the HTTP/2 preface (hyper-util's `auto` builder makes
    /// the same decision on the same bytes).
    fn sniff(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            if byte != PREFACE_START[self.sniffed] {
                self.sniffed = SNIFFED;
                return;
            }
            self.sniffed += 1;
            if self.sniffed == PREFACE_START.len() {
                self.sniffed = SNIFFED;
                self.conn.multiplexed.store(true, Relaxed);
                self.conn.head_started.store(0, Relaxed);
                return;
            }
        }
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Accepts connections until the phase leaves `Running`. Each connection task holds a clone of `done`,
/// so the shutdown can wait for all of them by waiting for the channel to close.
pub(crate) async fn accept_loop(
    shared: Arc<Shared>,
    listener: TcpListener,
    mut phase: watch::Receiver<Phase>,
    done: mpsc::Sender<()>,
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    shared.metrics.connections_accepted.fetch_add(1, Relaxed);
                    tokio::spawn(serve_connection(shared.clone(), stream, peer, phase.clone(), done.clone()));
                }
                Err(error) => {
                    // Out of file descriptors or memory: back off briefly rather than spin.
                    tracing::warn!(error = %error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            changed = phase.changed() => {
                if changed.is_err() || *phase.borrow() != Phase::Running {
                    break;
                }
            }
        }
    }
}

/// What woke a connection task.
enum Event {
    Closed(Result<(), Box<dyn std::error::Error + Send + Sync>>),
    Timer,
    /// The phase changed (false: the proxy handle is gone).
    Phase(bool),
}

async fn serve_connection(
    shared: Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    mut phase: watch::Receiver<Phase>,
    _done: mpsc::Sender<()>,
) {
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(error = %error, "cannot set TCP_NODELAY");
    }
    shared.metrics.connections_open.fetch_add(1, Relaxed);
    let clock = shared.clock;
    let conn = Arc::new(ConnState {
        shared: shared.clone(),
        forwarded: ForwardedValues::new(peer),
        in_flight: AtomicU32::new(0),
        idle_since: AtomicU64::new(clock.now().0),
        head_started: AtomicU64::new(0),
        request_deadline: AtomicU64::new(0),
        now: AtomicU64::new(clock.now().0),
        multiplexed: AtomicBool::new(false),
    });
    let io = TokioIo::new(ClientStream { inner: stream, conn: conn.clone(), sniffed: 0 });
    let service = {
        let conn = conn.clone();
        service_fn(move |request| crate::trace::serve(conn.clone(), request))
    };
    // With upgrades: a 101 hands the client connection to the request's tunnel (`forward::tunnel`).
    let connection = shared.server.serve_connection_with_upgrades(io, service);
    let mut connection = pin!(connection);
    let idle_timeout = shared.config.client_idle_timeout;
    let header_timeout = shared.config.client_header_timeout;
    // The next moment a timeout could fire, given what the connection is doing: while busy, the deadline
    // of the request waiting for response headers, if any.
    let next_deadline = || {
        if conn.in_flight.load(Relaxed) > 0 {
            return Some(conn.request_deadline.load(Relaxed)).filter(|&deadline| deadline != 0).map(Nanos);
        }
        Some(match conn.head_started.load(Relaxed) {
            0 => Nanos(conn.idle_since.load(Relaxed)).saturating_add(idle_timeout),
            started => Nanos(started).saturating_add(header_timeout),
        })
    };
    let mut timer = pin!(tokio::time::sleep(idle_timeout));
    let mut armed: Option<Nanos> = None;
    let mut shutting_down = false;
    if *phase.borrow() != Phase::Running {
        shutting_down = true;
        connection.as_mut().graceful_shutdown();
    }
    loop {
        let event = {
            // Polling `changed` takes a mutex of the watch channel that every connection shares. It is
            // polled once to register this task's waker (which stays the same for the task's life), and
            // after that only when the version it watches moved: one atomic load per wake-up.
            let watcher = phase.clone();
            let mut changed = pin!(phase.changed());
            let mut registered = false;
            poll_fn(|cx| {
                conn.now.store(clock.now().0, Relaxed);
                if let Poll::Ready(result) = connection.as_mut().poll(cx) {
                    return Poll::Ready(Event::Closed(result));
                }
                if !registered || watcher.has_changed().unwrap_or(true) {
                    registered = true;
                    if let Poll::Ready(changed) = changed.as_mut().poll(cx) {
                        return Poll::Ready(Event::Phase(changed.is_ok()));
                    }
                }
                // Checked after every poll of the connection (a request head may just have started, or a
                // response just ended), but the timer is only moved earlier: a later deadline is picked up
                // when the armed one fires, which keeps timer-wheel updates off the per-request path.
                if let Some(deadline) = next_deadline()
                    && armed.is_none_or(|armed| deadline < armed)
                {
                    armed = Some(deadline);
                    timer.as_mut().reset(clock.instant(deadline));
                }
                if armed.is_some() && timer.as_mut().poll(cx).is_ready() {
                    armed = None;
                    return Poll::Ready(Event::Timer);
                }
                Poll::Pending
            })
            .await
        };
        match event {
            Event::Closed(result) => {
                if let Err(error) = result {
                    tracing::debug!(peer = %peer, error = %error, "client connection ended with an error");
                }
                break;
            }
            Event::Timer => {
                // A busy connection's timer is its request's deadline: polling the connection again (the
                // loop does) lets the request see that it passed.
                if conn.in_flight.load(Relaxed) > 0 || next_deadline().is_none_or(|deadline| clock.now() < deadline) {
                    continue;
                }
                if conn.head_started.load(Relaxed) != 0 {
                    tracing::debug!(peer = %peer, "request head too slow, closing");
                    break;
                }
                if shutting_down {
                    break;
                }
                shutting_down = true;
                connection.as_mut().graceful_shutdown();
            }
            Event::Phase(alive) => match if alive { *phase.borrow() } else { Phase::Closing } {
                Phase::Running => {}
                Phase::Draining => {
                    if !shutting_down {
                        shutting_down = true;
                        connection.as_mut().graceful_shutdown();
                    }
                }
                Phase::Closing => break,
            },
        }
    }
    shared.metrics.connections_open.fetch_sub(1, Relaxed);
}
