//! The upstream side for HTTP/2 backends (h2c, prior knowledge): one multiplexed connection per backend
//! and event loop, driven by a task of its own (hyper's HTTP/2 client), each attempt a stream on it.
//!
//! Unlike the HTTP/1.1 side (`upstream`), the request is built as a `Request` per attempt from the
//! parsed head (HTTP/2 carries headers as a map, and the authority in the URI). A stream the backend
//! refused, or a connection that went away before the request was sent, leaves the request unprocessed
//! and retried as a connect failure would be.

use hyper::body::Incoming;
use hyper::client::conn::http2;
use hyper::header;
use hyper::{Request, Response, Uri, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use crate::backend::BackendRef;
use crate::body::{FailureFlag, RequestBody};
use crate::forward::AttemptError;
use crate::headers::add_forwarding_headers;
use crate::proxy::Shared;
use crate::upstream::RequestHead;

/// A handle to a backend's HTTP/2 connection; clones share the connection.
pub(crate) type H2Sender = http2::SendRequest<RequestBody>;

/// One attempt on `backend` over its HTTP/2 connection (made first if there is none); resolves with the
/// response head.
pub(crate) async fn send(
    shared: &Shared,
    backend: &BackendRef,
    head: RequestHead<'_>,
    body: RequestBody,
) -> Result<Response<Incoming>, AttemptError> {
    let mut sender = match backend.h2_sender() {
        Some(sender) => sender,
        None => match connect(shared, backend).await {
            Ok(sender) => sender,
            Err(failure) => return Err(failure.into_error(body)),
        },
    };
    if let Err(error) = sender.ready().await {
        tracing::debug!(backend = %backend.id, error = %error, "http/2 connection closed");
        backend.h2_forget();
        return Err(AttemptError::Reset { unsent: Some(body), answered: false });
    }
    let request_failed = body.failure_flag();
    match sender.send_request(request(head, backend, body)).await {
        Ok(response) => Ok(response),
        Err(error) => {
            // hyper resets the stream when the client's request body fails: the client's doing, answered
            // 413 or 400 as on HTTP/1.1, and not held against the backend.
            if let Some(failure) = request_failed.as_ref().and_then(FailureFlag::get) {
                return Err(AttemptError::Body(failure));
            }
            // A refused stream (REFUSED_STREAM, or beyond a GOAWAY's last stream) was not processed;
            // other stream errors are treated as a reset before any response byte, as on HTTP/1.1.
            tracing::debug!(backend = %backend.id, error = %error, "http/2 request failed");
            Err(AttemptError::Reset { unsent: None, answered: false })
        }
    }
}

/// Why no connection could be made.
enum ConnectFailure {
    Refused,
    Busy,
}

impl ConnectFailure {
    fn into_error(self, body: RequestBody) -> AttemptError {
        match self {
            Self::Refused => AttemptError::Connect(body),
            Self::Busy => AttemptError::Busy(body),
        }
    }
}

async fn connect(shared: &Shared, backend: &BackendRef) -> Result<H2Sender, ConnectFailure> {
    let connect = TcpStream::connect(backend.addr);
    let stream = match tokio::time::timeout(shared.config.connect_timeout_for(backend.addr), connect).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            tracing::debug!(backend = %backend.id, error = %error, "connect failed");
            return Err(ConnectFailure::Refused);
        }
        Err(_elapsed) => {
            tracing::debug!(backend = %backend.id, "connect timed out: accept queue full");
            return Err(ConnectFailure::Busy);
        }
    };
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(backend = %backend.id, error = %error, "cannot set TCP_NODELAY");
    }
    let handshake = http2::Builder::new(TokioExecutor::new()).handshake(TokioIo::new(stream)).await;
    let (sender, connection) = match handshake {
        Ok(handshake) => handshake,
        Err(error) => {
            tracing::debug!(backend = %backend.id, error = %error, "http/2 handshake failed");
            return Err(ConnectFailure::Refused);
        }
    };
    let id = backend.id;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(backend = %id, error = %error, "http/2 connection ended with an error");
        }
    });
    backend.h2_keep(sender.clone());
    Ok(sender)
}

/// The request for one attempt: the head's method and headers (forwarding headers added), the authority
/// from `Host` (or the backend's address) in the URI, as HTTP/2 wants it.
fn request(head: RequestHead<'_>, backend: &BackendRef, body: RequestBody) -> Request<RequestBody> {
    let mut headers = head.headers.clone();
    let authority = headers.remove(header::HOST);
    add_forwarding_headers(&mut headers, head.forwarded);
    let path = head.uri.path_and_query().map_or("/", |path| path.as_str());
    let uri = authority
        .as_ref()
        .and_then(|host| host.to_str().ok())
        .and_then(|host| Uri::builder().scheme("http").authority(host).path_and_query(path).build().ok())
        .or_else(|| {
            let host = backend.addr.to_string();
            Uri::builder().scheme("http").authority(host.as_str()).path_and_query(path).build().ok()
        })
        .unwrap_or_else(|| head.uri.clone());
    let mut request = Request::new(body);
    *request.method_mut() = head.method.clone();
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_2;
    *request.headers_mut() = headers;
    if let Some(host) = authority.filter(|_| request.uri().authority().is_none()) {
        request.headers_mut().insert(header::HOST, host);
    }
    request
}
