//! The upstream side: HTTP/1.1 client connections to backends, driven inside the request's own task
//! (no connection task, no dispatch channel, no body channel) and pooled per backend between requests.
//!
//! One [`Call`] is one request/response exchange on a [`Conn`]: the head is encoded straight from the
//! borrowed request parts (so a retry needs no copy of them), a buffered body follows in the same
//! write, a streamed body is written frame by frame while the response is read (full duplex), and the
//! response body is decoded from the connection's read buffer as the client side polls it
//! ([`UpstreamBody`]). A connection goes back to the pool only when both messages ended cleanly.

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, Waker, ready};

use bytes::{Bytes, BytesMut};
use hyper::body::{Body, Frame, SizeHint};
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{HeaderMap, Method, Response, StatusCode, Uri, Version};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::body::{BodyFailure, RequestBody};
use crate::headers::{ForwardedValues, encode_request_headers, is_hop_by_hop_response, push_line};

/// Bytes read from the socket at most per read.
const READ_CHUNK: usize = 16 * 1024;
/// Most header lines in a response head (hyper's default too).
const MAX_HEADERS: usize = 100;
/// Largest response head accepted (hyper's default buffer limit).
const MAX_HEAD_BYTES: usize = 400 * 1024;

/// A connection to a backend, idle in a pool or carrying one exchange.
#[derive(Debug)]
pub(crate) struct Conn {
    stream: TcpStream,
    /// Bytes read and not consumed yet.
    read_buf: BytesMut,
    /// Where reads land before they join `read_buf` (zeroed once, so reads need no `unsafe`).
    scratch: Box<[u8]>,
    /// Bytes to write; reused from request to request.
    write_buf: Vec<u8>,
}

impl Conn {
    pub(crate) fn new(stream: TcpStream) -> Box<Self> {
        Box::new(Self {
            stream,
            read_buf: BytesMut::with_capacity(READ_CHUNK),
            scratch: vec![0; READ_CHUNK].into_boxed_slice(),
            write_buf: Vec::with_capacity(1024),
        })
    }

    /// Whether an idle connection still looks usable: the backend has neither closed it nor sent
    /// anything unasked. Costs no system call unless the socket became readable since the last read.
    pub(crate) fn is_reusable(&self) -> bool {
        if !self.read_buf.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(Waker::noop());
        match self.stream.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                matches!(self.stream.try_read(&mut probe), Err(error) if error.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }

    /// Reads once into `read_buf`; `Ok(0)` is the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let mut buf = ReadBuf::new(&mut self.scratch);
        ready!(Pin::new(&mut self.stream).poll_read(cx, &mut buf))?;
        let filled = buf.filled();
        self.read_buf.extend_from_slice(filled);
        Poll::Ready(Ok(filled.len()))
    }
}

/// What a request attempt sends: the rewritten head (borrowed) and where it goes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestHead<'a> {
    pub(crate) method: &'a Method,
    pub(crate) uri: &'a Uri,
    pub(crate) headers: &'a HeaderMap,
    pub(crate) forwarded: &'a ForwardedValues,
    /// Written as `Host` when the request has none (an HTTP/1.0 client).
    pub(crate) backend_addr: SocketAddr,
    /// The protocol the client asks to switch to (`Upgrade`, stripped from `headers` as hop-by-hop and
    /// written again with `Connection: upgrade`).
    pub(crate) upgrade: Option<&'a HeaderValue>,
}

/// How a call failed before the response head.
#[derive(Debug)]
pub(crate) enum CallError {
    /// Not a byte of the request was written: it can go to another connection as it is.
    Unsent(RequestBody),
    /// The connection failed after (some of) the request was written.
    Reset,
    /// The backend closed the connection (or reset it) after (some of) the request was written and
    /// before a single byte of response: on a reused connection, most likely the backend's idle timeout
    /// firing as the request went out, so the request was not processed.
    Closed,
    /// The request body failed (too large, or the client's stream broke).
    Body(BodyFailure),
}

/// What is left of the request body to write.
#[derive(Debug)]
enum Sending {
    /// Head and body are in the write buffer (or written); the body is kept until the first byte goes
    /// out, so that an unsent request can be handed back.
    Buffered(RequestBody),
    /// A streamed body, written frame by frame, chunked unless the request has a `Content-Length`.
    Stream {
        body: RequestBody,
        chunked: bool,
    },
    Done,
    /// Writing failed; the connection will not be reused.
    Failed,
}

/// One request/response exchange on a connection.
#[derive(Debug)]
pub(crate) struct Call {
    conn: Box<Conn>,
    /// Bytes of `conn.write_buf` already written.
    written: usize,
    wrote_any: bool,
    sending: Sending,
    head_request: bool,
    /// Whether the request asked to switch protocols: only then may the backend answer 101.
    upgrade_requested: bool,
    /// How the response body is delimited (known once the head is parsed).
    framing: Framing,
    /// Whether the backend keeps the connection open after this response.
    keep_alive: bool,
    /// Whether any byte of the response (an interim one included) has been read.
    received_any: bool,
}

impl Call {
    /// Encodes the request head (and a buffered body) into the connection's write buffer.
    pub(crate) fn new(mut conn: Box<Conn>, head: RequestHead<'_>, body: RequestBody) -> Self {
        let out = &mut conn.write_buf;
        out.clear();
        out.extend_from_slice(head.method.as_str().as_bytes());
        out.push(b' ');
        match head.uri.path_and_query() {
            Some(path) => out.extend_from_slice(path.as_str().as_bytes()),
            None => out.extend_from_slice(head.uri.to_string().as_bytes()),
        }
        out.extend_from_slice(b" HTTP/1.1\r\n");
        encode_request_headers(head.headers, head.forwarded, out);
        if !head.headers.contains_key(header::HOST) {
            use std::io::Write as _;
            // Writing into a Vec cannot fail.
            let _ = write!(out, "host: {}\r\n", head.backend_addr);
        }
        if let Some(protocol) = head.upgrade {
            push_line(out, b"connection", b"upgrade");
            push_line(out, header::UPGRADE.as_str().as_bytes(), protocol.as_bytes());
        }
        let has_length = head.headers.contains_key(header::CONTENT_LENGTH);
        let sending = match body {
            RequestBody::Empty | RequestBody::Full(None) => {
                out.extend_from_slice(b"\r\n");
                Sending::Buffered(body)
            }
            RequestBody::Full(Some(ref bytes)) => {
                if !has_length {
                    push_content_length(out, bytes.len());
                }
                out.extend_from_slice(b"\r\n");
                out.extend_from_slice(bytes);
                Sending::Buffered(body)
            }
            RequestBody::Stream(_) => {
                if !has_length {
                    out.extend_from_slice(b"transfer-encoding: chunked\r\n");
                }
                out.extend_from_slice(b"\r\n");
                Sending::Stream { body, chunked: !has_length }
            }
        };
        Self {
            conn,
            written: 0,
            wrote_any: false,
            sending,
            head_request: head.method == Method::HEAD,
            upgrade_requested: head.upgrade.is_some(),
            framing: Framing::Done,
            keep_alive: false,
            received_any: false,
        }
    }

    /// Writes what is pending and pulls further frames of a streamed body; ready when the whole request
    /// is written (or writing failed).
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), SendError>> {
        if let Sending::Failed = self.sending {
            // Writing failed for good (the backend closed, say, after an early response): what is left in
            // the write buffer is not tried again on every poll while the response is read.
            return Poll::Ready(Ok(()));
        }
        loop {
            let conn = &mut *self.conn;
            while self.written < conn.write_buf.len() {
                let result = ready!(Pin::new(&mut conn.stream).poll_write(cx, &conn.write_buf[self.written..]));
                match result {
                    Ok(0) => return Poll::Ready(Err(SendError::Io(io::ErrorKind::WriteZero.into()))),
                    Ok(n) => {
                        self.written += n;
                        if !self.wrote_any {
                            self.wrote_any = true;
                            if let Sending::Buffered(_) = self.sending {
                                self.sending = Sending::Done;
                            }
                        }
                    }
                    Err(error) => return Poll::Ready(Err(SendError::Io(error))),
                }
            }
            conn.write_buf.clear();
            self.written = 0;
            let Sending::Stream { body, chunked } = &mut self.sending else {
                if let Sending::Buffered(_) = self.sending {
                    self.sending = Sending::Done;
                }
                return Poll::Ready(Ok(()));
            };
            let chunked = *chunked;
            let out = &mut conn.write_buf;
            match ready!(Pin::new(body).poll_frame(cx)) {
                None => {
                    if chunked {
                        out.extend_from_slice(b"0\r\n\r\n");
                    }
                    self.sending = Sending::Done;
                }
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        if data.is_empty() {
                            continue;
                        }
                        if chunked {
                            push_hex_line(out, data.len());
                            out.extend_from_slice(&data);
                            out.extend_from_slice(b"\r\n");
                        } else {
                            out.extend_from_slice(&data);
                        }
                    }
                    Err(frame) => {
                        if chunked {
                            out.extend_from_slice(b"0\r\n");
                            if let Ok(trailers) = frame.into_trailers() {
                                for (name, value) in &trailers {
                                    push_line(out, name.as_str().as_bytes(), value.as_bytes());
                                }
                            }
                            out.extend_from_slice(b"\r\n");
                        }
                        self.sending = Sending::Done;
                    }
                },
                Some(Err(error)) => {
                    self.sending = Sending::Failed;
                    return Poll::Ready(Err(SendError::Body(error.failure())));
                }
            }
        }
    }

    /// Sends the request and waits for the response head (skipping 1xx interim responses).
    pub(crate) fn poll_response(&mut self, cx: &mut Context<'_>) -> Poll<Result<Response<()>, CallError>> {
        loop {
            match self.poll_send(cx) {
                Poll::Ready(Err(SendError::Body(failure))) => return Poll::Ready(Err(CallError::Body(failure))),
                Poll::Ready(Err(SendError::Io(error))) => {
                    if !self.wrote_any {
                        return Poll::Ready(Err(self.unsent()));
                    }
                    tracing::debug!(error = %error, "writing to the backend failed");
                    // The backend may still have answered (say, early, before closing): read on.
                    self.sending = Sending::Failed;
                }
                Poll::Ready(Ok(())) | Poll::Pending => {}
            }
            if !self.conn.read_buf.is_empty() {
                match parse_response(&mut self.conn.read_buf, self.head_request, self.upgrade_requested) {
                    Ok(Some(parsed)) => return Poll::Ready(Ok(self.accept(parsed))),
                    Ok(None) if self.conn.read_buf.len() > MAX_HEAD_BYTES => {
                        tracing::debug!("response head too large");
                        return Poll::Ready(Err(CallError::Reset));
                    }
                    Ok(None) => {}
                    Err(error) => {
                        tracing::debug!(error = %error, "malformed response head");
                        return Poll::Ready(Err(CallError::Reset));
                    }
                }
            }
            let error = match ready!(self.conn.poll_fill(cx)) {
                Ok(0) => None,
                Ok(_) => {
                    self.received_any = true;
                    continue;
                }
                Err(error) => Some(error),
            };
            if let Some(error) = error {
                tracing::debug!(error = %error, "reading from the backend failed");
            }
            return Poll::Ready(Err(match (self.wrote_any, self.received_any) {
                (false, _) => self.unsent(),
                (true, false) => CallError::Closed,
                (true, true) => CallError::Reset,
            }));
        }
    }

    /// Reads the rest of a short body announced by `Content-Length` (at most `limit` bytes) once the
    /// whole request is written: a backend stopped or killed between its head and its body then fails
    /// the attempt, which may go elsewhere, instead of cutting the client's response short after its
    /// head went out (Python's `http.server` writes the two in separate calls). Other bodies stream.
    pub(crate) fn poll_short_body(&mut self, cx: &mut Context<'_>, limit: u64) -> Poll<Result<(), CallError>> {
        let request_written = match self.sending {
            Sending::Failed => true,
            Sending::Done => self.conn.write_buf.is_empty(),
            Sending::Buffered(_) | Sending::Stream { .. } => false,
        };
        loop {
            let Framing::Length(length) = self.framing else { return Poll::Ready(Ok(())) };
            if !request_written || length > limit || self.conn.read_buf.len() as u64 >= length {
                return Poll::Ready(Ok(()));
            }
            match ready!(self.conn.poll_fill(cx)) {
                Ok(0) => return Poll::Ready(Err(CallError::Reset)),
                Ok(_) => {}
                Err(error) => {
                    tracing::debug!(error = %error, "reading the response body from the backend failed");
                    return Poll::Ready(Err(CallError::Reset));
                }
            }
        }
    }

    /// The backend's connection after it switched protocols (101), with what it sent after the head: from
    /// here on both sides' bytes are copied as they are.
    pub(crate) fn into_tunnel(self) -> (TcpStream, BytesMut) {
        let conn = *self.conn;
        (conn.stream, conn.read_buf)
    }

    fn unsent(&mut self) -> CallError {
        match std::mem::replace(&mut self.sending, Sending::Failed) {
            Sending::Buffered(body) | Sending::Stream { body, .. } => CallError::Unsent(body),
            Sending::Done | Sending::Failed => CallError::Reset,
        }
    }

    fn accept(&mut self, parsed: Parsed) -> Response<()> {
        self.framing = parsed.framing;
        self.keep_alive = parsed.keep_alive;
        parsed.response
    }
}

/// Why writing the request stopped.
#[derive(Debug)]
enum SendError {
    Io(io::Error),
    Body(BodyFailure),
}

/// How the response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body (HEAD, 1xx, 204, 304), or all of it read.
    Done,
    /// `Content-Length`: bytes still to come.
    Length(u64),
    Chunked(Chunk),
    /// Until the backend closes the connection.
    Close,
}

/// Where the chunked decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Size,
    Data(u64),
    DataEnd,
    Trailers,
}

struct Parsed {
    response: Response<()>,
    framing: Framing,
    keep_alive: bool,
}

/// Parses a response head at the start of `buf`, consuming it (and any 1xx interim responses before
/// it). `Ok(None)`: incomplete.
fn parse_response(
    buf: &mut BytesMut,
    head_request: bool,
    upgrade_requested: bool,
) -> Result<Option<Parsed>, ParseError> {
    loop {
        // Parsed from a frozen snapshot of what was read, so that header values are slices of it (no copy
        // and no table of offsets); what follows the head goes back into `buf`.
        let bytes = buf.split().freeze();
        let mut storage = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut parsed = httparse::Response::new(&mut []);
        let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut parsed,
            &bytes,
            &mut storage,
        ) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => {
                buf.extend_from_slice(&bytes);
                return Ok(None);
            }
            Err(error) => return Err(ParseError::Syntax(error)),
        };
        let code = parsed.code.unwrap_or(0);
        let status = StatusCode::from_u16(code).map_err(|_| ParseError::Status)?;
        if matches!(code, 100 | 102..=199) {
            // Interim response: skip it and parse what follows.
            buf.extend_from_slice(&bytes[len..]);
            if buf.is_empty() {
                return Ok(None);
            }
            continue;
        }
        let version = if parsed.version == Some(0) { Version::HTTP_10 } else { Version::HTTP_11 };
        let reason = parsed
            .reason
            .filter(|reason| Some(*reason) != status.canonical_reason())
            .map(|reason| bytes.slice_ref(reason.as_bytes()));
        let lines = parsed.headers;

        // Connection handling first: keep-alive, and the names `Connection` lists (hop-by-hop too).
        let mut keep_alive = version == Version::HTTP_11;
        let mut saw_close = false;
        let mut listed: Vec<&[u8]> = Vec::new();
        let mut chunked = false;
        let mut transfer_encoding = false;
        let mut content_length: Option<u64> = None;
        let mut content_length_values = 0;
        let mut upgrade: Option<&[u8]> = None;
        for line in lines.iter() {
            let name = line.name;
            if name.eq_ignore_ascii_case("connection") {
                for token in line.value.split(|&byte| byte == b',').map(<[u8]>::trim_ascii) {
                    if token.eq_ignore_ascii_case(b"close") {
                        saw_close = true;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") {
                        keep_alive = true;
                    } else if !token.is_empty() {
                        listed.push(token);
                    }
                }
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                transfer_encoding = true;
                // Chunked must be the last coding of the last line.
                chunked = line
                    .value
                    .rsplit(|&byte| byte == b',')
                    .next()
                    .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            } else if name.eq_ignore_ascii_case("upgrade") {
                upgrade = Some(line.value);
            } else if name.eq_ignore_ascii_case("content-length") {
                for part in line.value.split(|&byte| byte == b',') {
                    let length = parse_content_length(part.trim_ascii()).ok_or(ParseError::ContentLength)?;
                    if content_length.is_some_and(|earlier| earlier != length) {
                        return Err(ParseError::ContentLength);
                    }
                    content_length_values += 1;
                    content_length = Some(length);
                }
            }
        }
        let keep_alive = keep_alive && !saw_close;
        // The Content-Length lines are not passed on as they are when Transfer-Encoding overrides them
        // (RFC 9112 §6.3: the body is decoded here and re-framed for the client, which must not see a
        // length that is not the body's), nor when they repeat one value ("5, 5"): then it goes as one.
        let rewrite_length = transfer_encoding || content_length_values > 1;

        let mut headers = HeaderMap::with_capacity(lines.len());
        for line in lines.iter() {
            let raw_name = line.name.as_bytes();
            let name = HeaderName::from_bytes(raw_name).map_err(|_| ParseError::HeaderName)?;
            if is_hop_by_hop_response(&name)
                || (name != header::HOST && listed.iter().any(|token| token.eq_ignore_ascii_case(raw_name)))
                || (rewrite_length && name == header::CONTENT_LENGTH)
            {
                continue;
            }
            let value =
                HeaderValue::from_maybe_shared(bytes.slice_ref(line.value)).map_err(|_| ParseError::HeaderValue)?;
            headers.append(name, value);
        }
        if rewrite_length
            && !transfer_encoding
            && let Some(length) = content_length
        {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        }
        buf.extend_from_slice(&bytes[len..]);

        let (framing, reusable) = match code {
            // A switch the request asked for: the connection becomes a tunnel, with the `Upgrade` the
            // backend chose and `Connection: upgrade` passed on (they are hop-by-hop, but name the switch
            // itself). Unasked, a backend may not switch (RFC 9110 §15.2.2); passed on, the 101 would leave
            // the client waiting on a dead protocol.
            101 => {
                let protocol = upgrade.filter(|_| upgrade_requested).ok_or(ParseError::Switch)?;
                let protocol = HeaderValue::from_bytes(protocol).map_err(|_| ParseError::HeaderValue)?;
                headers.insert(header::UPGRADE, protocol);
                headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
                (Framing::Done, false)
            }
            204 | 304 => (Framing::Done, true),
            _ if head_request => (Framing::Done, true),
            _ if transfer_encoding => {
                if version == Version::HTTP_10 {
                    return Err(ParseError::TransferEncoding);
                }
                // With a Content-Length as well, the message may be a smuggling attempt: the connection
                // is not reused (RFC 9112 §6.1).
                if chunked {
                    (Framing::Chunked(Chunk::Size), content_length.is_none())
                } else {
                    (Framing::Close, false)
                }
            }
            _ => match content_length {
                Some(0) => (Framing::Done, true),
                Some(length) => (Framing::Length(length), true),
                None => (Framing::Close, false),
            },
        };

        let mut response = Response::new(());
        *response.status_mut() = status;
        // The proxy speaks HTTP/1.1 to its client whatever the backend's version (RFC 9110 §6.2: an
        // intermediary sends its own version); hyper would otherwise answer an HTTP/1.1 client in HTTP/1.0,
        // without chunking and without keep-alive. hyper still answers HTTP/1.0 clients in HTTP/1.0.
        *response.version_mut() = Version::HTTP_11;
        *response.headers_mut() = headers;
        if let Some(reason) = reason
            && let Ok(reason) = hyper::ext::ReasonPhrase::try_from(reason)
        {
            response.extensions_mut().insert(reason);
        }
        return Ok(Some(Parsed { response, framing, keep_alive: keep_alive && reusable }));
    }
}

/// Why a response head was refused.
#[derive(Debug)]
enum ParseError {
    Syntax(httparse::Error),
    Status,
    ContentLength,
    TransferEncoding,
    Switch,
    HeaderName,
    HeaderValue,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Syntax(error) => write!(f, "{error}"),
            Self::Status => f.write_str("invalid status code"),
            Self::ContentLength => f.write_str("invalid content-length"),
            Self::TransferEncoding => f.write_str("transfer-encoding in an HTTP/1.0 response"),
            Self::Switch => f.write_str("switching protocols without an upgrade request"),
            Self::HeaderName => f.write_str("invalid header name"),
            Self::HeaderValue => f.write_str("invalid header value"),
        }
    }
}

/// The response body of a call, decoded from the connection as the client side polls it; it keeps
/// writing a streamed request body meanwhile.
#[derive(Debug)]
pub(crate) struct UpstreamBody {
    call: Call,
}

/// Why a response body stopped early.
#[derive(Debug)]
pub(crate) enum UpstreamBodyError {
    /// The backend closed the connection or sent something that is not HTTP.
    Backend(Option<io::Error>),
    /// The request body failed after the response had started.
    Request(BodyFailure),
}

impl fmt::Display for UpstreamBodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Backend(_) => f.write_str("backend response body broke off"),
            Self::Request(BodyFailure::TooLarge) => {
                f.write_str("request body grew too large while the response streamed")
            }
            Self::Request(BodyFailure::Client) => f.write_str("request body failed while the response streamed"),
        }
    }
}

impl StdError for UpstreamBodyError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            Self::Backend(Some(error)) => Some(error),
            _ => None,
        }
    }
}

impl UpstreamBody {
    pub(crate) fn new(call: Call) -> Self {
        Self { call }
    }

    /// The connection, if both messages ended cleanly and the backend keeps it open.
    pub(crate) fn into_reusable(self) -> Option<Box<Conn>> {
        let call = self.call;
        let clean = call.keep_alive
            && call.framing == Framing::Done
            && matches!(call.sending, Sending::Done)
            && call.conn.write_buf.is_empty()
            && call.conn.read_buf.is_empty();
        clean.then_some(call.conn)
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = UpstreamBodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if matches!(this.call.sending, Sending::Stream { .. }) || this.call.written < this.call.conn.write_buf.len() {
            match this.call.poll_send(cx) {
                Poll::Ready(Err(SendError::Body(failure))) => {
                    return Poll::Ready(Some(Err(UpstreamBodyError::Request(failure))));
                }
                Poll::Ready(Err(SendError::Io(error))) => {
                    tracing::debug!(error = %error, "writing the request body failed");
                    this.call.sending = Sending::Failed;
                }
                Poll::Ready(Ok(())) | Poll::Pending => {}
            }
        }
        loop {
            let call = &mut this.call;
            if let Some(frame) = decode(&mut call.conn.read_buf, &mut call.framing).transpose() {
                return Poll::Ready(Some(frame));
            }
            if this.call.framing == Framing::Done {
                return Poll::Ready(None);
            }
            // A chunk-size line (extensions included) or a trailer section is bounded like a head, or a
            // backend that never ends one would grow the read buffer without limit.
            if matches!(this.call.framing, Framing::Chunked(Chunk::Size | Chunk::Trailers))
                && this.call.conn.read_buf.len() > MAX_HEAD_BYTES
            {
                tracing::debug!("chunk metadata too large");
                return Poll::Ready(Some(Err(UpstreamBodyError::Backend(None))));
            }
            match ready!(this.call.conn.poll_fill(cx)) {
                Ok(0) if this.call.framing == Framing::Close => {
                    this.call.framing = Framing::Done;
                    return Poll::Ready(None);
                }
                Ok(0) => return Poll::Ready(Some(Err(UpstreamBodyError::Backend(None)))),
                Ok(_) => {}
                Err(error) => return Poll::Ready(Some(Err(UpstreamBodyError::Backend(Some(error))))),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.call.framing == Framing::Done
    }

    fn size_hint(&self) -> SizeHint {
        match self.call.framing {
            Framing::Done => SizeHint::with_exact(0),
            Framing::Length(remaining) => SizeHint::with_exact(remaining),
            _ => SizeHint::default(),
        }
    }
}

/// Decodes the next frame of a response body from what was read; `None` when more bytes are needed.
fn decode(buf: &mut BytesMut, framing: &mut Framing) -> Result<Option<Frame<Bytes>>, UpstreamBodyError> {
    loop {
        match *framing {
            Framing::Done => return Ok(None),
            Framing::Length(remaining) => {
                if buf.is_empty() {
                    return Ok(None);
                }
                let take = usize::try_from(remaining).map_or(buf.len(), |remaining| remaining.min(buf.len()));
                let left = remaining - take as u64;
                *framing = if left == 0 { Framing::Done } else { Framing::Length(left) };
                return Ok(Some(Frame::data(buf.split_to(take).freeze())));
            }
            Framing::Close => {
                if buf.is_empty() {
                    return Ok(None);
                }
                return Ok(Some(Frame::data(buf.split().freeze())));
            }
            Framing::Chunked(Chunk::Size) => match httparse::parse_chunk_size(buf) {
                Ok(httparse::Status::Complete((used, size))) => {
                    let _ = buf.split_to(used);
                    *framing = Framing::Chunked(if size == 0 { Chunk::Trailers } else { Chunk::Data(size) });
                }
                Ok(httparse::Status::Partial) => return Ok(None),
                Err(_) => return Err(UpstreamBodyError::Backend(None)),
            },
            Framing::Chunked(Chunk::Data(remaining)) => {
                if buf.is_empty() {
                    return Ok(None);
                }
                let take = usize::try_from(remaining).map_or(buf.len(), |remaining| remaining.min(buf.len()));
                let left = remaining - take as u64;
                *framing = Framing::Chunked(if left == 0 { Chunk::DataEnd } else { Chunk::Data(left) });
                return Ok(Some(Frame::data(buf.split_to(take).freeze())));
            }
            Framing::Chunked(Chunk::DataEnd) => {
                if buf.len() < 2 {
                    return Ok(None);
                }
                if &buf[..2] != b"\r\n" {
                    return Err(UpstreamBodyError::Backend(None));
                }
                let _ = buf.split_to(2);
                *framing = Framing::Chunked(Chunk::Size);
            }
            Framing::Chunked(Chunk::Trailers) => {
                let mut lines = [httparse::EMPTY_HEADER; MAX_HEADERS];
                let (used, trailers) = match httparse::parse_headers(buf, &mut lines) {
                    Ok(httparse::Status::Complete((used, trailers))) => (used, trailers),
                    Ok(httparse::Status::Partial) => return Ok(None),
                    Err(_) => return Err(UpstreamBodyError::Backend(None)),
                };
                let mut map = HeaderMap::new();
                for line in trailers {
                    if let (Ok(name), Ok(value)) =
                        (HeaderName::from_bytes(line.name.as_bytes()), HeaderValue::from_bytes(line.value))
                    {
                        map.append(name, value);
                    }
                }
                let _ = buf.split_to(used);
                *framing = Framing::Done;
                if !map.is_empty() {
                    return Ok(Some(Frame::trailers(map)));
                }
                return Ok(None);
            }
        }
    }
}

/// A Content-Length value: `1*DIGIT` (RFC 9110 §8.6), so no sign, space or empty value as `str::parse`
/// would allow some of; `None` when invalid or too large.
fn parse_content_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

fn push_content_length(out: &mut Vec<u8>, length: usize) {
    out.extend_from_slice(b"content-length: ");
    push_decimal(out, length);
    out.extend_from_slice(b"\r\n");
}

fn push_decimal(out: &mut Vec<u8>, mut value: usize) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[start..]);
}

fn push_hex_line(out: &mut Vec<u8>, mut value: usize) {
    let mut digits = [0u8; 16];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b"0123456789abcdef"[value % 16];
        value /= 16;
        if value == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[start..]);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a parsed head comes to: status, version, the headers passed on (sorted), framing, reuse.
    fn check_head(raw: &str, head_request: bool, expected: Option<(u16, &str, &[&str], Framing, bool)>) {
        let mut buf = BytesMut::from(raw);
        let got = parse_response(&mut buf, head_request, false).expect("well-formed head").map(|parsed| {
            let mut lines: Vec<String> = parsed
                .response
                .headers()
                .iter()
                .map(|(name, value)| format!("{name}: {}", value.to_str().unwrap_or("?")))
                .collect();
            lines.sort();
            let version = if parsed.response.version() == Version::HTTP_10 { "1.0" } else { "1.1" };
            (parsed.response.status().as_u16(), version, lines, parsed.framing, parsed.keep_alive)
        });
        let expected = expected.map(|(status, version, lines, framing, keep_alive)| {
            (status, version, lines.iter().map(|line| (*line).to_owned()).collect::<Vec<_>>(), framing, keep_alive)
        });
        assert_eq!(got, expected, "{raw:?}");
    }

    #[test]
    fn response_heads_give_framing_reuse_and_end_to_end_headers() {
        check_head("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n", false, None);
        check_head(
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-a: 1\r\n\r\nhello",
            false,
            Some((200, "1.1", &["content-length: 5", "x-a: 1"], Framing::Length(5), true)),
        );
        check_head(
            "HTTP/1.1 200 OK\r\nConnection: x-hop, close\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\n\
             Proxy-Authenticate: Basic\r\nTransfer-Encoding: gzip, chunked\r\nHost: kept\r\n\r\n",
            false,
            Some((200, "1.1", &["host: kept"], Framing::Chunked(Chunk::Size), false)),
        );
        check_head(
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
            false,
            Some((204, "1.1", &[], Framing::Done, true)),
        );
        check_head("HTTP/1.1 100 Continue\r\n\r\n", false, None);
        check_head(
            "HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n",
            true,
            Some((200, "1.1", &["content-length: 10"], Framing::Done, true)),
        );
        check_head("HTTP/1.0 200 OK\r\n\r\n", false, Some((200, "1.1", &[], Framing::Close, false)));
        check_head(
            "HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 0\r\n\r\n",
            false,
            Some((200, "1.1", &["content-length: 0"], Framing::Done, true)),
        );
        check_head(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n",
            false,
            Some((200, "1.1", &[], Framing::Close, false)),
        );
        check_head(
            "HTTP/1.1 200 OK\r\ncontent-length: 5, 5\r\nContent-Length: 5\r\n\r\n",
            false,
            Some((200, "1.1", &["content-length: 5"], Framing::Length(5), true)),
        );
        check_head(
            "HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\nx-a: 1\r\n\r\n",
            false,
            Some((200, "1.1", &["x-a: 1"], Framing::Chunked(Chunk::Size), false)),
        );
    }

    #[test]
    fn malformed_response_heads_are_refused() {
        for raw in [
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: +5\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: \r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 5,\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 5, 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999\r\n\r\n",
            "HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
            "NOT HTTP\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n",
        ] {
            assert!(parse_response(&mut BytesMut::from(raw), false, false).is_err(), "{raw:?}");
        }
    }

    /// Decodes `raw` in pieces of `step` bytes, as reads would deliver it; returns the data, the
    /// trailers and the framing at the end.
    fn decode_all(raw: &[u8], framing: Framing, step: usize) -> (Vec<u8>, Vec<String>, Framing) {
        let mut framing = framing;
        let mut buf = BytesMut::new();
        let (mut data, mut trailers) = (Vec::new(), Vec::new());
        for piece in raw.chunks(step) {
            buf.extend_from_slice(piece);
            while let Some(frame) = decode(&mut buf, &mut framing).expect("valid body") {
                match frame.into_data() {
                    Ok(bytes) => data.extend_from_slice(&bytes),
                    Err(frame) => {
                        let map = frame.into_trailers().expect("trailers");
                        trailers.extend(map.iter().map(|(name, value)| format!("{name}: {value:?}")));
                    }
                }
            }
        }
        (data, trailers, framing)
    }

    #[test]
    fn bodies_decode_whatever_the_read_boundaries() {
        let chunked = b"5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nx-sum: 1\r\n\r\n";
        for step in [1, 2, 3, 7, chunked.len()] {
            let (data, trailers, framing) = decode_all(chunked, Framing::Chunked(Chunk::Size), step);
            assert_eq!(
                (&data[..], &trailers[..], framing),
                (&b"hello, world"[..], &["x-sum: \"1\"".to_owned()][..], Framing::Done)
            );
        }
        let (data, trailers, framing) = decode_all(b"0\r\n\r\n", Framing::Chunked(Chunk::Size), 1);
        assert_eq!((data.len(), trailers.len(), framing), (0, 0, Framing::Done));
        let (data, _, framing) = decode_all(b"hello", Framing::Length(5), 2);
        assert_eq!((&data[..], framing), (&b"hello"[..], Framing::Done));
        let (data, _, framing) = decode_all(b"hel", Framing::Length(5), 2);
        assert_eq!((&data[..], framing), (&b"hel"[..], Framing::Length(2)));
        let mut bad = BytesMut::from(&b"5\r\nhelloXX"[..]);
        let mut framing = Framing::Chunked(Chunk::Size);
        assert!(decode(&mut bad, &mut framing).is_ok_and(|frame| frame.is_some()));
        assert!(decode(&mut bad, &mut framing).is_err(), "chunk data must end with CRLF");
    }

    #[test]
    fn numbers_are_written_in_decimal_and_hex() {
        let cases = [(0, "0", "0"), (9, "9", "9"), (255, "255", "ff"), (65536, "65536", "10000")];
        for (value, decimal, hex) in cases {
            let (mut dec_out, mut hex_out) = (Vec::new(), Vec::new());
            push_decimal(&mut dec_out, value);
            push_hex_line(&mut hex_out, value);
            assert_eq!((dec_out, hex_out), (decimal.as_bytes().to_vec(), format!("{hex}\r\n").into_bytes()));
        }
    }
}
