//! Bodies in both directions: the request body sent upstream (buffered for replay, or streamed), and
//! the response body sent to the client (streamed from the backend, finishing the exchange at its end).

use std::error::Error as StdError;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering::Relaxed};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::forward::{End, Exchange};
use crate::server::ActivityGuard;
use crate::upstream::{UpstreamBody, UpstreamBodyError};

/// A request body on its way to a backend.
#[derive(Debug)]
pub(crate) enum RequestBody {
    /// No body.
    Empty,
    /// A body buffered whole (at most `retry_buffer_bytes`), replayable on another backend.
    Full(Option<Bytes>),
    /// A body streamed through: what was read while deciding (`prefix`), then the rest from the client.
    Stream(StreamBody),
}

#[derive(Debug)]
pub(crate) struct StreamBody {
    pub(crate) prefix: Option<Bytes>,
    pub(crate) inner: Incoming,
    /// Bytes forwarded so far, including the prefix.
    pub(crate) seen: u64,
    pub(crate) limit: u64,
    /// Set when the client's stream fails: an HTTP/2 backend's stream then breaks off by the proxy's own
    /// reset, which is not the backend's failure.
    pub(crate) failed: FailureFlag,
}

impl StreamBody {
    pub(crate) fn new(prefix: Option<Bytes>, inner: Incoming, seen: u64, limit: u64) -> Self {
        Self { prefix, inner, seen, limit, failed: FailureFlag::default() }
    }
}

/// Where a streamed request body records that it failed, and how. On HTTP/2 hyper answers the failure by
/// resetting the stream, so the attempt (before the response head) or the response body (after it)
/// breaks off as if the backend had failed; this tells the two apart.
#[derive(Debug, Clone, Default)]
pub(crate) struct FailureFlag(Arc<AtomicU8>);

impl FailureFlag {
    fn set(&self, failure: BodyFailure) {
        let code = match failure {
            BodyFailure::TooLarge => 1,
            BodyFailure::Client => 2,
        };
        self.0.store(code, Relaxed);
    }

    /// How the request body failed, if it did.
    pub(crate) fn get(&self) -> Option<BodyFailure> {
        match self.0.load(Relaxed) {
            1 => Some(BodyFailure::TooLarge),
            2 => Some(BodyFailure::Client),
            _ => None,
        }
    }
}

/// Why a streamed request body stopped.
#[derive(Debug)]
pub(crate) enum RequestBodyError {
    /// It grew past `max_request_body_bytes`.
    TooLarge,
    /// The client's stream failed (it went away, or sent a broken chunk).
    Client(hyper::Error),
}

/// The kind of a request body failure, for the answer to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyFailure {
    /// 413.
    TooLarge,
    /// 400 (the client is probably gone).
    Client,
}

impl RequestBodyError {
    pub(crate) fn failure(&self) -> BodyFailure {
        match self {
            Self::TooLarge => BodyFailure::TooLarge,
            Self::Client(_) => BodyFailure::Client,
        }
    }
}

impl fmt::Display for RequestBodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLarge => f.write_str("request body larger than allowed"),
            Self::Client(_) => f.write_str("client request body failed"),
        }
    }
}

impl StdError for RequestBodyError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            Self::TooLarge => None,
            Self::Client(error) => Some(error),
        }
    }
}

impl RequestBody {
    /// A copy for another attempt, if the body can be replayed.
    pub(crate) fn replay(&self) -> Option<Self> {
        match self {
            Self::Empty => Some(Self::Empty),
            Self::Full(bytes) => Some(Self::Full(bytes.clone())),
            Self::Stream(_) => None,
        }
    }

    /// A streamed body's failure flag (a buffered one cannot fail once sent).
    pub(crate) fn failure_flag(&self) -> Option<FailureFlag> {
        match self {
            Self::Stream(stream) => Some(stream.failed.clone()),
            Self::Empty | Self::Full(_) => None,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = RequestBodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            Self::Empty => Poll::Ready(None),
            Self::Full(bytes) => Poll::Ready(bytes.take().map(|bytes| Ok(Frame::data(bytes)))),
            Self::Stream(stream) => {
                if let Some(prefix) = stream.prefix.take() {
                    return Poll::Ready(Some(Ok(Frame::data(prefix))));
                }
                let frame = ready!(Pin::new(&mut stream.inner).poll_frame(cx));
                let polled = match frame {
                    None => None,
                    Some(Err(error)) => Some(Err(RequestBodyError::Client(error))),
                    Some(Ok(frame)) => {
                        if let Some(data) = frame.data_ref() {
                            stream.seen += data.len() as u64;
                        }
                        if stream.seen > stream.limit { Some(Err(RequestBodyError::TooLarge)) } else { Some(Ok(frame)) }
                    }
                };
                if let Some(Err(error)) = &polled {
                    stream.failed.set(error.failure());
                }
                Poll::Ready(polled)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Empty => true,
            Self::Full(bytes) => bytes.is_none(),
            Self::Stream(stream) => stream.prefix.is_none() && stream.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Empty => SizeHint::with_exact(0),
            Self::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |bytes| bytes.len() as u64)),
            Self::Stream(stream) => {
                let prefix = stream.prefix.as_ref().map_or(0, |bytes| bytes.len() as u64);
                let inner = stream.inner.size_hint();
                match inner.exact() {
                    Some(exact) => SizeHint::with_exact(exact + prefix),
                    None => {
                        let mut hint = SizeHint::new();
                        hint.set_lower(inner.lower() + prefix);
                        hint
                    }
                }
            }
        }
    }
}

/// The response body sent to the client.
#[derive(Debug)]
pub struct ProxyBody {
    inner: ResponseInner,
    /// Keeps the client connection counted busy until the response ends.
    _activity: Option<ActivityGuard>,
    /// How long a backend's response body may go without a frame (`upstream_read_timeout`).
    read_timeout: Duration,
    /// Armed while waiting for the backend's next frame; reset by every frame.
    stall: Option<Pin<Box<Sleep>>>,
    /// Whether a frame arrived since the stall timer was last armed.
    progressed: bool,
}

/// A backend's response body that sent nothing for `upstream_read_timeout`.
#[derive(Debug)]
struct Stalled(Duration);

impl fmt::Display for Stalled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "backend response body stalled for {:?}", self.0)
    }
}

impl StdError for Stalled {}

/// Errors of [`ProxyBody`]: the backend's response body broke off.
pub(crate) type BoxError = Box<dyn StdError + Send + Sync>;

#[derive(Debug)]
enum ResponseInner {
    /// A response the proxy made itself, or an upstream response that has ended.
    Local(Option<Bytes>),
    /// A backend's response; the exchange is finished (counters, in-flight, pool) when it ends.
    Upstream { body: UpstreamBody, exchange: Exchange },
    /// An HTTP/2 backend's response, streamed from its connection's task; `request_failed` is the
    /// streamed request body's failure flag, if it streams.
    UpstreamH2 { body: Incoming, exchange: Exchange, request_failed: Option<FailureFlag> },
}

impl ProxyBody {
    pub(crate) fn local(bytes: &'static [u8], activity: Option<ActivityGuard>) -> Self {
        let bytes = if bytes.is_empty() { None } else { Some(Bytes::from_static(bytes)) };
        Self::new(ResponseInner::Local(bytes), activity, Duration::MAX)
    }

    /// A backend's response; the exchange keeps the client connection counted busy. The response is cut
    /// off (the client sees it end early, as from nginx after `proxy_read_timeout`) when the backend sends
    /// nothing for `read_timeout`.
    pub(crate) fn upstream(body: UpstreamBody, exchange: Exchange, read_timeout: Duration) -> Self {
        Self::new(ResponseInner::Upstream { body, exchange }, None, read_timeout)
    }

    /// An HTTP/2 backend's response; the exchange keeps the client connection counted busy.
    pub(crate) fn upstream_h2(
        body: Incoming,
        exchange: Exchange,
        read_timeout: Duration,
        request_failed: Option<FailureFlag>,
    ) -> Self {
        Self::new(ResponseInner::UpstreamH2 { body, exchange, request_failed }, None, read_timeout)
    }

    fn new(inner: ResponseInner, activity: Option<ActivityGuard>, read_timeout: Duration) -> Self {
        Self { inner, _activity: activity, read_timeout, stall: None, progressed: false }
    }

    /// Whether the backend has sent nothing for `read_timeout` while its body was awaited: arms the timer
    /// on the first wait and after every frame, and registers the task to be woken when it fires.
    fn stalled(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(deadline) = Instant::now().checked_add(self.read_timeout) else {
            return false;
        };
        let stall = match &mut self.stall {
            Some(stall) => {
                if std::mem::take(&mut self.progressed) {
                    stall.as_mut().reset(deadline);
                }
                stall
            }
            None => {
                self.progressed = false;
                self.stall.insert(Box::pin(tokio::time::sleep_until(deadline)))
            }
        };
        stall.as_mut().poll(cx).is_ready()
    }

    /// Ends the exchange as `end`; the connection returns to the pool when the body is complete and the
    /// connection reusable.
    fn finish(&mut self, end: End) {
        match std::mem::replace(&mut self.inner, ResponseInner::Local(None)) {
            ResponseInner::Upstream { body, exchange } => {
                let reusable = if end == End::Complete { body.into_reusable() } else { None };
                exchange.finish(end, reusable);
            }
            ResponseInner::UpstreamH2 { exchange, .. } => exchange.finish(end, None),
            ResponseInner::Local(_) => {}
        }
    }

    /// How a body let go before it was polled to its end ended: complete if it had nothing left to send
    /// (hyper stops polling once a `Content-Length` is written, before an HTTP/2 backend's separate end
    /// of stream), else the client left.
    fn end_at_drop(&self) -> End {
        let done = |ended: bool, hint: SizeHint| ended || hint.exact() == Some(0);
        let complete = match &self.inner {
            ResponseInner::Local(_) => true,
            ResponseInner::Upstream { body, .. } => done(body.is_end_stream(), body.size_hint()),
            ResponseInner::UpstreamH2 { body, .. } => done(body.is_end_stream(), body.size_hint()),
        };
        if complete { End::Complete } else { End::ClientGone }
    }
}

/// A frame of a response body, or the error that ended it.
type FrameResult = Result<Frame<Bytes>, BoxError>;

/// One frame of a backend's response (HTTP/1.1 or HTTP/2), observed for the exchange, and how the
/// response ended with it, if it did. A body that broke off (an error, or on HTTP/2 a reset without one
/// before the end) is `blame`d: the backend's failure unless the client's request body caused it.
fn poll_upstream<B>(
    body: &mut B,
    exchange: &mut Exchange,
    cx: &mut Context<'_>,
    blame: impl FnOnce(Option<&B::Error>) -> End,
) -> Poll<(Option<FrameResult>, Option<End>)>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    let frame = ready!(Pin::new(&mut *body).poll_frame(cx));
    let end = body.is_end_stream();
    Poll::Ready(match frame {
        None if end || body.size_hint().exact() == Some(0) => (None, Some(End::Complete)),
        None => (None, Some(blame(None))),
        Some(Err(error)) => {
            let end = blame(Some(&error));
            (Some(Err(error.into())), Some(end))
        }
        Some(Ok(frame)) => {
            observe(&frame, exchange);
            (Some(Ok(frame)), end.then_some(End::Complete))
        }
    })
}

/// Passes a backend's frame on, noting a gRPC status in trailers.
fn observe(frame: &Frame<Bytes>, exchange: &mut Exchange) {
    if exchange.wants_trailers()
        && let Some(trailers) = frame.trailers_ref()
    {
        exchange.observe_trailers(trailers);
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let polled = match &mut this.inner {
            ResponseInner::Local(bytes) => return Poll::Ready(bytes.take().map(|bytes| Ok(Frame::data(bytes)))),
            // The request body failing (the client's doing) surfaces here once the response streams.
            ResponseInner::Upstream { body, exchange } => poll_upstream(body, exchange, cx, |error| match error {
                Some(UpstreamBodyError::Request(_)) => End::ClientGone,
                Some(UpstreamBodyError::Backend(_)) | None => End::Broken,
            }),
            ResponseInner::UpstreamH2 { body, exchange, request_failed } => {
                let request_failed = request_failed.as_ref();
                poll_upstream(body, exchange, cx, |_| {
                    // hyper resets the stream when the request body fails: that reset is the proxy's.
                    if request_failed.is_some_and(|failed| failed.get().is_some()) {
                        End::ClientGone
                    } else {
                        End::Broken
                    }
                })
            }
        };
        let Poll::Ready((frame, ended)) = polled else {
            if this.stalled(cx) {
                tracing::debug!(timeout = ?this.read_timeout, "backend response body stalled");
                this.finish(End::Stalled);
                return Poll::Ready(Some(Err(Box::new(Stalled(this.read_timeout)))));
            }
            return Poll::Pending;
        };
        this.progressed = true;
        if let Some(end) = ended {
            this.finish(end);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            ResponseInner::Local(bytes) => bytes.is_none(),
            ResponseInner::Upstream { body, .. } => body.is_end_stream(),
            ResponseInner::UpstreamH2 { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            ResponseInner::Local(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |bytes| bytes.len() as u64)),
            ResponseInner::Upstream { body, .. } => body.size_hint(),
            ResponseInner::UpstreamH2 { body, .. } => body.size_hint(),
        }
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        let end = self.end_at_drop();
        self.finish(end);
    }
}
