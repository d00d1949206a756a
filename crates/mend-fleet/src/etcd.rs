//! A small typed client for etcd's v3 API as JSON over HTTP (etcd's gRPC gateway, `POST /v3/...`,
//! etcd ≥ 3.4): the calls the fleet makes and nothing else. No protobuf and no gRPC stack to build:
//! keys and values travel base64-encoded, int64 fields come back as JSON strings (accepted as numbers
//! too), and fields at their zero value are left out of answers (a count of 0, `succeeded: false`, a
//! lease's `TTL` once it is gone).
//!
//! `http://` endpoints in clear, `https://` ones over TLS (rustls, [`crate::tls`]; never a mix). Connections
//! are kept for reuse, a few at most; a call that cannot connect to one endpoint tries the next. With a user and password, a token
//! from `/v3/auth/authenticate` goes in each call's `Authorization` header, fetched again once when etcd
//! says it is no longer valid.

use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::tls::TlsClient;

/// Idle connections kept for reuse (the background loop, a permit and the campaign at once).
const MAX_IDLE: usize = 4;
/// Bound on connecting to one endpoint.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Why an etcd call failed.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// An endpoint is not `http://HOST:PORT`, `https://HOST:PORT` or `HOST:PORT`, or its scheme does not
    /// go with the TLS settings.
    #[error("etcd endpoint {endpoint:?}: {problem}")]
    Endpoint {
        /// The endpoint as configured.
        endpoint: String,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// No endpoint accepted a connection.
    #[error("cannot connect to etcd at {endpoints}")]
    Connect {
        /// The endpoints tried.
        endpoints: String,
        /// The last endpoint's error.
        #[source]
        source: std::io::Error,
    },
    /// The TLS handshake with an endpoint failed: its certificate is not signed by `ca_file` or does not
    /// name it, or it refused this host's.
    #[error("TLS handshake with etcd at {endpoint} failed")]
    Tls {
        /// The endpoint (`HOST:PORT`).
        endpoint: String,
        /// rustls's error (inside an I/O error).
        #[source]
        source: std::io::Error,
    },
    /// The HTTP exchange failed (connection reset, etcd stopped mid-answer).
    #[error("{call}: HTTP exchange with etcd failed")]
    Http {
        /// The API path called.
        call: &'static str,
        /// hyper's error.
        #[source]
        source: hyper::Error,
    },
    /// etcd answered with an error.
    #[error("{call}: etcd answered {status}: {message}")]
    Answer {
        /// The API path called.
        call: &'static str,
        /// The HTTP status.
        status: u16,
        /// etcd's message (`message` of its JSON error, else the start of the body).
        message: String,
    },
    /// etcd's answer is not what the call returns.
    #[error("{call}: cannot read etcd's answer")]
    Decode {
        /// The API path called.
        call: &'static str,
        /// Where and why.
        #[source]
        source: serde_json::Error,
    },
}

/// One endpoint: its authority (`HOST:PORT`) and, over TLS, the name its certificate must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Endpoint {
    authority: String,
    /// Some for `https://`: the endpoint's host as a server name.
    tls_name: Option<ServerName<'static>>,
}

impl Endpoint {
    fn parse(text: &str) -> Result<Self, EtcdError> {
        let invalid = |problem| EtcdError::Endpoint { endpoint: text.to_owned(), problem };
        let (https, rest) = match text.strip_prefix("https://") {
            Some(rest) => (true, rest),
            None => (false, text.strip_prefix("http://").unwrap_or(text)),
        };
        let authority = rest.trim_end_matches('/');
        let expected = "expected http://HOST:PORT, https://HOST:PORT or HOST:PORT";
        if authority.contains("://") || authority.contains('/') || authority.is_empty() {
            return Err(invalid(expected));
        }
        let Some((host, _port)) = authority.rsplit_once(':') else { return Err(invalid(expected)) };
        let tls_name = if https {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let name = ServerName::try_from(host)
                .map_err(|_| invalid("its host is not a DNS name or an IP address, as TLS needs"))?;
            Some(name.to_owned())
        } else {
            None
        };
        Ok(Self { authority: authority.to_owned(), tls_name })
    }
}

/// An open HTTP/1.1 connection; its driver task ends with it.
struct Connection {
    sender: SendRequest<Full<Bytes>>,
    endpoint: usize,
    driver: tokio::task::JoinHandle<()>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// etcd's v3 JSON API at a set of endpoints.
pub(crate) struct Etcd {
    endpoints: Vec<Endpoint>,
    /// Set with `https://` endpoints (all of them are then).
    tls: Option<TlsClient>,
    auth: Option<(String, String)>,
    token: Mutex<Option<String>>,
    idle: Mutex<Vec<Connection>>,
    /// The endpoint that last answered: tried first.
    preferred: Mutex<usize>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// An int64 as etcd's gateway writes it: a JSON string, or a number.
fn int64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Int64 {
        Number(i64),
        Text(String),
    }
    match Int64::deserialize(deserializer)? {
        Int64::Number(n) => Ok(n),
        Int64::Text(text) => text.parse().map_err(serde::de::Error::custom),
    }
}

/// Bytes as etcd's gateway writes them: base64.
fn base64_bytes<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
    let text = String::deserialize(deserializer)?;
    BASE64.decode(text.as_bytes()).map_err(serde::de::Error::custom)
}

fn encode(bytes: &[u8]) -> String {
    BASE64.encode(bytes)
}

/// The end of the range of every key that starts with `prefix` (etcd's `WithPrefix`).
pub(crate) fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte 0xff (or empty): to the end of the key space.
    vec![0]
}

/// The answer's header.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Header {
    /// The store's revision when the call was served.
    #[serde(default, deserialize_with = "int64")]
    pub(crate) revision: i64,
}

/// One key and its value.
#[derive(Debug, Deserialize)]
pub(crate) struct KeyValue {
    /// The key.
    #[serde(default, deserialize_with = "base64_bytes")]
    pub(crate) key: Vec<u8>,
    /// Its value.
    #[serde(default, deserialize_with = "base64_bytes")]
    pub(crate) value: Vec<u8>,
}

/// `/v3/kv/range`'s answer.
#[derive(Debug, Deserialize)]
pub(crate) struct RangeAnswer {
    /// The header (its revision).
    #[serde(default)]
    pub(crate) header: Header,
    /// The keys (none with `count_only`).
    #[serde(default)]
    pub(crate) kvs: Vec<KeyValue>,
    /// How many keys are in the range.
    #[serde(default, deserialize_with = "int64")]
    pub(crate) count: i64,
}

#[derive(Debug, Deserialize)]
struct TxnAnswer {
    #[serde(default)]
    succeeded: bool,
}

#[derive(Debug, Deserialize)]
struct LeaseAnswer {
    #[serde(rename = "ID", default, deserialize_with = "int64")]
    id: i64,
    #[serde(rename = "TTL", default, deserialize_with = "int64")]
    ttl: i64,
}

/// `/v3/lease/keepalive` is a stream in gRPC: the gateway wraps each answer in `result`.
#[derive(Debug, Deserialize)]
struct KeepAliveAnswer {
    result: Option<LeaseAnswer>,
}

#[derive(Debug, Deserialize)]
struct LeaderAnswer {
    kv: Option<KeyValue>,
}

#[derive(Debug, Deserialize)]
struct TokenAnswer {
    token: String,
}

/// A comparison of a transaction: the mod revision of every key in a range is below a bound.
#[derive(Debug, Clone)]
pub(crate) struct ModRevisionBelow {
    /// The range's first key.
    pub(crate) key: String,
    /// Its end ([`prefix_end`] for a prefix).
    pub(crate) range_end: Vec<u8>,
    /// The bound (exclusive).
    pub(crate) below: i64,
}

/// A put of a transaction's success branch.
#[derive(Debug, Clone)]
pub(crate) struct Put {
    /// The key.
    pub(crate) key: String,
    /// The value.
    pub(crate) value: String,
    /// Its lease.
    pub(crate) lease: i64,
}

impl Etcd {
    /// A client of the etcd at `endpoints` (not contacted yet), over TLS with `tls` (then every endpoint is
    /// `https://`; without it none is).
    pub(crate) fn new(
        endpoints: &[String],
        auth: Option<(String, String)>,
        tls: Option<TlsClient>,
    ) -> Result<Self, EtcdError> {
        let endpoints = endpoints.iter().map(|e| Endpoint::parse(e)).collect::<Result<Vec<_>, _>>()?;
        if endpoints.is_empty() {
            return Err(EtcdError::Endpoint { endpoint: String::new(), problem: "no endpoint" });
        }
        for endpoint in &endpoints {
            match (&endpoint.tls_name, &tls) {
                (Some(_), None) => {
                    return Err(EtcdError::Endpoint {
                        endpoint: endpoint.authority.clone(),
                        problem: "https:// needs the TLS settings (ca_file)",
                    });
                }
                (None, Some(_)) => {
                    return Err(EtcdError::Endpoint {
                        endpoint: endpoint.authority.clone(),
                        problem: "not https:// while TLS is set: no call goes out in clear",
                    });
                }
                _ => {}
            }
        }
        Ok(Self {
            endpoints,
            tls,
            auth,
            token: Mutex::new(None),
            idle: Mutex::new(Vec::new()),
            preferred: Mutex::new(0),
        })
    }

    async fn connect(&self) -> Result<Connection, EtcdError> {
        let first = *lock(&self.preferred);
        let mut last_error = None;
        let all = || self.endpoints.iter().map(|e| e.authority.as_str()).collect::<Vec<_>>().join(", ");
        for offset in 0..self.endpoints.len() {
            let idx = (first + offset) % self.endpoints.len();
            let endpoint = &self.endpoints[idx];
            let authority = &endpoint.authority;
            let stream =
                match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(authority.as_str())).await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(source)) => {
                        last_error = Some(EtcdError::Connect { endpoints: all(), source });
                        continue;
                    }
                    Err(_) => {
                        let source = std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out");
                        last_error = Some(EtcdError::Connect { endpoints: all(), source });
                        continue;
                    }
                };
            let _ = stream.set_nodelay(true);
            let opened = match (&self.tls, &endpoint.tls_name) {
                (Some(tls), Some(endpoint_name)) => {
                    let name = tls.server_name.clone().unwrap_or_else(|| endpoint_name.clone());
                    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, tls.connector.connect(name, stream)).await
                    {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(source)) => {
                            last_error = Some(EtcdError::Tls { endpoint: authority.clone(), source });
                            continue;
                        }
                        Err(_) => {
                            let source = std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out");
                            last_error = Some(EtcdError::Tls { endpoint: authority.clone(), source });
                            continue;
                        }
                    };
                    open(stream).await
                }
                _ => open(stream).await,
            };
            match opened {
                Ok((sender, driver)) => {
                    *lock(&self.preferred) = idx;
                    return Ok(Connection { sender, endpoint: idx, driver });
                }
                Err(error) => {
                    last_error = Some(EtcdError::Connect { endpoints: all(), source: std::io::Error::other(error) });
                }
            }
        }
        Err(last_error
            .unwrap_or_else(|| EtcdError::Connect { endpoints: all(), source: std::io::Error::other("no endpoint") }))
    }

    /// An idle connection that is still open, or a new one.
    async fn connection(&self) -> Result<Connection, EtcdError> {
        loop {
            let Some(mut connection) = lock(&self.idle).pop() else { break };
            if !connection.sender.is_closed() && connection.sender.ready().await.is_ok() {
                return Ok(connection);
            }
        }
        self.connect().await
    }

    /// One POST of `body` to `path`: the status and the body of the answer.
    async fn exchange(&self, path: &'static str, body: &Value, token: Option<&str>) -> Result<(u16, Bytes), EtcdError> {
        let mut connection = self.connection().await?;
        let authority = &self.endpoints[connection.endpoint].authority;
        let mut request = hyper::Request::post(path)
            .header(hyper::header::HOST, authority.as_str())
            .header(hyper::header::CONTENT_TYPE, "application/json");
        if let Some(token) = token {
            request = request.header(hyper::header::AUTHORIZATION, token);
        }
        let request = request.body(Full::new(Bytes::from(body.to_string()))).map_err(|error| EtcdError::Answer {
            call: path,
            status: 0,
            message: format!("cannot build the request: {error}"),
        })?;
        let response =
            connection.sender.send_request(request).await.map_err(|source| EtcdError::Http { call: path, source })?;
        let status = response.status().as_u16();
        let answer =
            response.into_body().collect().await.map_err(|source| EtcdError::Http { call: path, source })?.to_bytes();
        let mut idle = lock(&self.idle);
        if idle.len() < MAX_IDLE {
            idle.push(connection);
        }
        Ok((status, answer))
    }

    async fn token(&self) -> Result<Option<String>, EtcdError> {
        let Some((user, password)) = &self.auth else { return Ok(None) };
        if let Some(token) = lock(&self.token).clone() {
            return Ok(Some(token));
        }
        let body = json!({ "name": user, "password": password });
        let (status, answer) = self.exchange("/v3/auth/authenticate", &body, None).await?;
        let answer: TokenAnswer = decode("/v3/auth/authenticate", status, &answer)?;
        *lock(&self.token) = Some(answer.token.clone());
        Ok(Some(answer.token))
    }

    /// POSTs `body` to `path` and reads the answer as `T`; with auth, authenticates again once if etcd
    /// says the token is no longer valid.
    async fn call<T: DeserializeOwned>(&self, path: &'static str, body: Value) -> Result<T, EtcdError> {
        let token = self.token().await?;
        let (status, answer) = self.exchange(path, &body, token.as_deref()).await?;
        if token.is_some() && status != 200 && String::from_utf8_lossy(&answer).contains("invalid auth token") {
            *lock(&self.token) = None;
            let token = self.token().await?;
            let (status, answer) = self.exchange(path, &body, token.as_deref()).await?;
            return decode(path, status, &answer);
        }
        decode(path, status, &answer)
    }

    /// The keys under `prefix`, or (with `count_only`) only how many there are.
    pub(crate) async fn range_prefix(&self, prefix: &str, count_only: bool) -> Result<RangeAnswer, EtcdError> {
        let body = json!({
            "key": encode(prefix.as_bytes()), "range_end": encode(&prefix_end(prefix)), "count_only": count_only,
        });
        self.call("/v3/kv/range", body).await
    }

    /// [`Self::range_prefix`] as of `revision` (one snapshot with a read that answered at it).
    pub(crate) async fn range_prefix_at(
        &self,
        prefix: &str,
        count_only: bool,
        revision: i64,
    ) -> Result<RangeAnswer, EtcdError> {
        let body = json!({
            "key": encode(prefix.as_bytes()), "range_end": encode(&prefix_end(prefix)), "count_only": count_only,
            "revision": revision.to_string(),
        });
        self.call("/v3/kv/range", body).await
    }

    /// The value of `key`, if it exists.
    pub(crate) async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, EtcdError> {
        let answer: RangeAnswer = self.call("/v3/kv/range", json!({ "key": encode(key.as_bytes()) })).await?;
        Ok(answer.kvs.into_iter().next().map(|kv| kv.value))
    }

    /// Writes `key` = `value` on `lease`.
    pub(crate) async fn put(&self, key: &str, value: &str, lease: i64) -> Result<(), EtcdError> {
        let body =
            json!({ "key": encode(key.as_bytes()), "value": encode(value.as_bytes()), "lease": lease.to_string() });
        let _: Value = self.call("/v3/kv/put", body).await?;
        Ok(())
    }

    /// Deletes `key`.
    pub(crate) async fn delete(&self, key: &str) -> Result<(), EtcdError> {
        let _: Value = self.call("/v3/kv/deleterange", json!({ "key": encode(key.as_bytes()) })).await?;
        Ok(())
    }

    /// A transaction: the puts if every comparison holds; whether they were made.
    pub(crate) async fn txn_puts(&self, compares: &[ModRevisionBelow], puts: &[Put]) -> Result<bool, EtcdError> {
        let compare: Vec<Value> = compares
            .iter()
            .map(|c| {
                json!({
                    "result": "LESS", "target": "MOD", "key": encode(c.key.as_bytes()),
                    "range_end": encode(&c.range_end), "mod_revision": c.below.to_string(),
                })
            })
            .collect();
        let success: Vec<Value> = puts
            .iter()
            .map(|p| {
                json!({ "request_put": {
                    "key": encode(p.key.as_bytes()), "value": encode(p.value.as_bytes()), "lease": p.lease.to_string(),
                }})
            })
            .collect();
        let answer: TxnAnswer =
            self.call("/v3/kv/txn", json!({ "compare": compare, "success": success, "failure": [] })).await?;
        Ok(answer.succeeded)
    }

    /// A new lease of `ttl_s` seconds: its id.
    pub(crate) async fn lease_grant(&self, ttl_s: i64) -> Result<i64, EtcdError> {
        let answer: LeaseAnswer = self.call("/v3/lease/grant", json!({ "TTL": ttl_s })).await?;
        Ok(answer.id)
    }

    /// Renews `lease` once: its TTL now, 0 if it is gone.
    pub(crate) async fn lease_keep_alive(&self, lease: i64) -> Result<i64, EtcdError> {
        let answer: KeepAliveAnswer = self.call("/v3/lease/keepalive", json!({ "ID": lease.to_string() })).await?;
        Ok(answer.result.map_or(0, |result| result.ttl))
    }

    /// Revokes `lease` (its keys go at once).
    pub(crate) async fn lease_revoke(&self, lease: i64) -> Result<(), EtcdError> {
        let _: Value = self.call("/v3/lease/revoke", json!({ "ID": lease.to_string() })).await?;
        Ok(())
    }

    /// Campaigns in election `name` with `lease`: returns once this campaigner leads.
    pub(crate) async fn campaign(&self, name: &str, value: &str, lease: i64) -> Result<(), EtcdError> {
        let body = json!({
            "name": encode(name.as_bytes()), "lease": lease.to_string(), "value": encode(value.as_bytes()),
        });
        let _: Value = self.call("/v3/election/campaign", body).await?;
        Ok(())
    }

    /// The value the leader of election `name` campaigned with; None without a leader.
    pub(crate) async fn leader(&self, name: &str) -> Result<Option<Vec<u8>>, EtcdError> {
        match self.call::<LeaderAnswer>("/v3/election/leader", json!({ "name": encode(name.as_bytes()) })).await {
            Ok(answer) => Ok(answer.kv.map(|kv| kv.value)),
            Err(EtcdError::Answer { message, .. }) if message.contains("no leader") => Ok(None),
            Err(error) => Err(error),
        }
    }
}

/// An HTTP/1.1 connection over `io` (TCP, or TLS over TCP), its driver spawned.
async fn open<IO>(io: IO) -> Result<(SendRequest<Full<Bytes>>, tokio::task::JoinHandle<()>), hyper::Error>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, driver) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    let driver = tokio::spawn(async move {
        let _ = driver.await;
    });
    Ok((sender, driver))
}

/// Reads an answer: `T` on 200, else etcd's error message.
fn decode<T: DeserializeOwned>(call: &'static str, status: u16, body: &[u8]) -> Result<T, EtcdError> {
    if status != 200 {
        #[derive(Deserialize)]
        struct ErrorAnswer {
            message: Option<String>,
            error: Option<String>,
        }
        let message = match serde_json::from_slice::<ErrorAnswer>(body) {
            Ok(ErrorAnswer { message: Some(message), .. }) | Ok(ErrorAnswer { error: Some(message), .. }) => message,
            _ => String::from_utf8_lossy(&body[..body.len().min(200)]).trim_end().to_owned(),
        };
        return Err(EtcdError::Answer { call, status, message });
    }
    serde_json::from_slice(body).map_err(|source| EtcdError::Decode { call, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse() {
        assert_eq!(Endpoint::parse("http://127.0.0.1:2379").expect("valid").authority, "127.0.0.1:2379");
        assert_eq!(Endpoint::parse("etcd-1:2379/").expect("valid").authority, "etcd-1:2379");
        assert_eq!(Endpoint::parse("http://127.0.0.1:2379").expect("valid").tls_name, None);
        let https = Endpoint::parse("https://etcd-1.example:2379").expect("valid");
        assert_eq!(https.authority, "etcd-1.example:2379");
        assert_eq!(https.tls_name, Some(ServerName::try_from("etcd-1.example").expect("a name")));
        let v6 = Endpoint::parse("https://[::1]:2379").expect("valid");
        assert_eq!(v6.tls_name, Some(ServerName::try_from("::1").expect("an address")));
        for bad in ["http://etcd:2379/v3", "etcd", "ftp://etcd:2379", "https://", "https://bad_name!:2379"] {
            assert!(matches!(Endpoint::parse(bad), Err(EtcdError::Endpoint { .. })), "{bad}");
        }
    }

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end("/mend/hosts/"), b"/mend/hosts0".to_vec());
        assert_eq!(prefix_end("a\u{7f}"), b"a\x80".to_vec());
        assert_eq!(prefix_end(""), vec![0]);
    }

    #[test]
    fn answers_as_etcd_3_4_writes_them() {
        // Copied from etcd 3.4.23's gateway: int64s as strings, zero fields left out.
        let range: RangeAnswer = decode(
            "/v3/kv/range",
            200,
            br#"{"header":{"cluster_id":"324952591200643719","revision":"2","raft_term":"2"},"count":"1"}"#,
        )
        .expect("range");
        assert_eq!((range.header.revision, range.count, range.kvs.len()), (2, 1, 0));
        let empty: RangeAnswer = decode("/v3/kv/range", 200, br#"{"header":{"revision":"2"}}"#).expect("empty");
        assert_eq!(empty.count, 0);
        let kv: RangeAnswer =
            decode("/v3/kv/range", 200, br#"{"kvs":[{"key":"L3AvYQ==","value":"aGk=","mod_revision":"2"}],"count":1}"#)
                .expect("kvs");
        assert_eq!((kv.kvs[0].key.as_slice(), kv.kvs[0].value.as_slice(), kv.count), (&b"/p/a"[..], &b"hi"[..], 1));
        let txn: TxnAnswer = decode("/v3/kv/txn", 200, br#"{"header":{"revision":"2"}}"#).expect("txn");
        assert!(!txn.succeeded);
        let kept: KeepAliveAnswer =
            decode("/v3/lease/keepalive", 200, br#"{"result":{"header":{},"ID":"2324035875143719431","TTL":"5"}}"#)
                .expect("keepalive");
        assert_eq!(kept.result.map(|r| (r.id, r.ttl)), Some((2_324_035_875_143_719_431, 5)));
        // A lease that is gone: no TTL.
        let gone: KeepAliveAnswer =
            decode("/v3/lease/keepalive", 200, br#"{"result":{"header":{},"ID":"12345"}}"#).expect("gone");
        assert_eq!(gone.result.map(|r| r.ttl), Some(0));
        let leader: LeaderAnswer =
            decode("/v3/election/leader", 200, br#"{"header":{},"kv":{"key":"L3AvbA==","value":"aGk="}}"#)
                .expect("leader");
        assert_eq!(leader.kv.map(|kv| kv.value), Some(b"hi".to_vec()));
    }

    #[test]
    fn errors_name_the_call_and_etcds_message() {
        let error = decode::<Value>(
            "/v3/election/leader",
            500,
            br#"{"error":"election: no leader","message":"election: no leader","code":2}"#,
        )
        .expect_err("an error");
        assert_eq!(error.to_string(), "/v3/election/leader: etcd answered 500: election: no leader");
        let error = decode::<Value>("/v3/kv/put", 502, b"Bad Gateway").expect_err("an error");
        assert_eq!(error.to_string(), "/v3/kv/put: etcd answered 502: Bad Gateway");
        let error = decode::<RangeAnswer>("/v3/kv/range", 200, br#"{"count":"many"}"#).expect_err("bad");
        assert!(matches!(error, EtcdError::Decode { call: "/v3/kv/range", .. }), "{error}");
    }
}
