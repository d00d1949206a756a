//! A small HTTP/1.1 client for the daemon's API (loopback by default), built on hyper.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::header::{AUTHORIZATION, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// How the client reaches the daemon.
#[derive(Debug, Clone)]
pub(crate) struct Client {
    address: SocketAddr,
    token: Option<String>,
}

/// What went wrong talking to the daemon.
#[derive(Debug)]
pub(crate) enum ClientError {
    /// Nothing answers at the address.
    NotRunning(String),
    /// The API answered with an error.
    Api(StatusCode, String),
    /// Anything else (protocol errors, bad JSON).
    Other(String),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotRunning(message) | Self::Other(message) => f.write_str(message),
            Self::Api(status, message) => write!(f, "{message} (HTTP {})", status.as_u16()),
        }
    }
}

impl std::error::Error for ClientError {}

impl Client {
    /// A client for the daemon at `address`.
    pub(crate) fn new(address: SocketAddr, token: Option<String>) -> Self {
        Self { address, token }
    }

    async fn send(&self, method: Method, path: &str) -> Result<hyper::Response<hyper::body::Incoming>, ClientError> {
        self.send_body(method, path, Bytes::new()).await
    }

    async fn send_body(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Result<hyper::Response<hyper::body::Incoming>, ClientError> {
        let address = self.address;
        let connect = tokio::time::timeout(Duration::from_secs(3), TcpStream::connect(address)).await;
        let stream = match connect {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => {
                return Err(ClientError::NotRunning(format!("mend is not running at {address} ({error})")));
            }
            Err(_) => {
                return Err(ClientError::NotRunning(format!("mend is not answering at {address} (connect timed out)")));
            }
        };
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|error| ClientError::Other(format!("talking to mend at {address}: {error}")))?;
        tokio::spawn(connection);
        let mut request = Request::builder().method(method).uri(path).header(HOST, address.to_string());
        if let Some(token) = &self.token {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        if !body.is_empty() {
            request = request.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let request =
            request.body(http_body_util::Full::new(body)).map_err(|error| ClientError::Other(error.to_string()))?;
        sender
            .send_request(request)
            .await
            .map_err(|error| ClientError::Other(format!("talking to mend at {address}: {error}")))
    }

    /// Sends a request and returns the JSON body; API errors become [`ClientError::Api`].
    pub(crate) async fn json<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
    ) -> Result<T, ClientError> {
        self.json_with_body(method, path, None).await
    }

    /// Like [`Client::json`], with a JSON request body.
    pub(crate) async fn json_with_body<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<T, ClientError> {
        let body = body.map(|value| Bytes::from(value.to_string())).unwrap_or_default();
        let body = success_body(self.send_body(method, path, body).await?).await?;
        serde_json::from_slice(&body)
            .map_err(|error| ClientError::Other(format!("unexpected answer from mend: {error}")))
    }

    /// Sends a GET and returns the body as text (a report, say); API errors become [`ClientError::Api`].
    pub(crate) async fn text(&self, path: &str) -> Result<String, ClientError> {
        let body = success_body(self.send(Method::GET, path).await?).await?;
        String::from_utf8(body.to_vec()).map_err(|_| ClientError::Other("the answer is not UTF-8".to_owned()))
    }

    /// Streams a (possibly endless) body, handing each chunk to `on_chunk`.
    pub(crate) async fn stream(&self, path: &str, mut on_chunk: impl FnMut(&[u8])) -> Result<(), ClientError> {
        let response = self.send(Method::GET, path).await?;
        let status = response.status();
        let mut body = response.into_body();
        if !status.is_success() {
            let bytes = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            return Err(ClientError::Api(status, api_error(&bytes)));
        }
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|error| ClientError::Other(format!("mend closed the stream: {error}")))?;
            if let Some(data) = frame.data_ref() {
                on_chunk(data);
            }
        }
        Ok(())
    }
}

/// Percent-encodes a query value.
pub(crate) fn encode_query_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(byte as char),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// The whole body of a successful answer; an error answer becomes [`ClientError::Api`] with its message.
async fn success_body(response: hyper::Response<hyper::body::Incoming>) -> Result<Bytes, ClientError> {
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|error| ClientError::Other(format!("reading the answer: {error}")))?
        .to_bytes();
    if !status.is_success() {
        return Err(ClientError::Api(status, api_error(&body)));
    }
    Ok(body)
}

/// The API's `{"error": ...}` message, or the body's text when it is not that.
fn api_error(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|value| value.get("error").and_then(|e| e.as_str()).map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_owned())
}
