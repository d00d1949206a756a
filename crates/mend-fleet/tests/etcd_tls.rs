//! The fleet over TLS to a real etcd (Debian's `etcd-server`, started here on loopback with a temp data
//! directory) that demands client certificates (`--client-cert-auth`); the certificates are made here with
//! rcgen: a CA, etcd's server certificate, a client certificate, and another CA that signed none of them.
//! etcd also listens in clear on a second port, used only by the test to set up users. A host with the
//! CA and its client certificate registers, leads and takes a permit over TLS (with user and password
//! auth on top, across expired tokens); a host with the wrong CA, without a client certificate or
//! checking the wrong name never reaches the fleet, says why, and gets `Unreachable` for a permit (the
//! heal stage then acts on local budgets alone); TLS files that cannot be used stop the fleet at start,
//! naming the key and the file.

#![allow(clippy::disallowed_methods)] // Waits in real time for a real etcd.

use std::path::PathBuf;
mod support;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mend_config::{Fleet, FleetAuth, FleetTls};
use mend_fleet::{FleetHandle, FleetView, PermitAnswer, PermitRequest};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use support::{b64, eventually, free_port, post};

/// The PEM files of a test PKI, in a temp directory.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `ca.pem` signs `server.pem` (localhost and 127.0.0.1) and `client.pem`; `other-ca.pem` signs
    /// nothing here.
    fn make() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let pki = Self { dir };
        let ca = |name: &str| {
            let key = KeyPair::generate().expect("a key");
            let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.distinguished_name.push(DnType::CommonName, name);
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            let cert = params.self_signed(&key).expect("a CA certificate");
            (cert.pem(), Issuer::new(params, key))
        };
        let (ca_pem, issuer) = ca("mend test CA");
        let (other_ca_pem, _) = ca("another CA");
        let leaf = |names: Vec<String>, common_name: Option<&str>, usages: Vec<ExtendedKeyUsagePurpose>| {
            let key = KeyPair::generate().expect("a key");
            let mut params = CertificateParams::new(names).expect("params");
            params.distinguished_name = DistinguishedName::new();
            if let Some(common_name) = common_name {
                params.distinguished_name.push(DnType::CommonName, common_name);
            }
            params.extended_key_usages = usages;
            let cert = params.signed_by(&key, &issuer).expect("a certificate");
            (cert.pem(), key.serialize_pem())
        };
        // etcd's gateway dials etcd's own gRPC port with the server certificate as its client
        // certificate: the server certificate serves both ways.
        let (server_pem, server_key) = leaf(
            vec!["localhost".to_owned(), "127.0.0.1".to_owned()],
            Some("etcd"),
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth],
        );
        // No Common Name: with user auth on, etcd's gateway refuses a client certificate that has one (etcd
        // would take the CN as the user on gRPC, and cannot through the gateway).
        let (client_pem, client_key) = leaf(Vec::new(), None, vec![ExtendedKeyUsagePurpose::ClientAuth]);
        for (name, text) in [
            ("ca.pem", ca_pem),
            ("other-ca.pem", other_ca_pem),
            ("server.pem", server_pem),
            ("server-key.pem", server_key),
            ("client.pem", client_pem),
            ("client-key.pem", client_key),
        ] {
            std::fs::write(pki.path(name), text).expect("write a PEM file");
        }
        pki
    }

    fn tls(&self, ca: &str, identity: bool, server_name: Option<&str>) -> FleetTls {
        FleetTls {
            ca_file: self.path(ca),
            identity: identity.then(|| (self.path("client.pem"), self.path("client-key.pem"))),
            server_name: server_name.map(str::to_owned),
        }
    }
}

/// A real etcd on loopback, TLS with client certificates on one client port and clear on another (for
/// the test's setup), killed on drop.
struct Etcd {
    child: Child,
    plain_port: u16,
    tls_port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Etcd {
    /// Starts etcd with `pki`'s server certificate, demanding client certificates signed by its CA.
    fn start(pki: &Pki) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let (plain_port, tls_port, peer_port) = (free_port(), free_port(), free_port());
        let clients = format!("http://127.0.0.1:{plain_port},https://127.0.0.1:{tls_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let log = std::fs::File::create(dir.path().join("etcd.log")).expect("etcd log");
        let child = Command::new("etcd")
            .args(["--name", "tls-test", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--listen-client-urls", &clients, "--advertise-client-urls", &clients])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("tls-test={peer}")])
            .arg("--cert-file")
            .arg(pki.path("server.pem"))
            .arg("--key-file")
            .arg(pki.path("server-key.pem"))
            .arg("--trusted-ca-file")
            .arg(pki.path("ca.pem"))
            .arg("--client-cert-auth")
            // Tokens expire 1 s after their last use: the fleet's calls come further apart than that.
            .args(["--auth-token", "simple", "--auth-token-ttl", "1"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|error| {
                panic!("cannot run etcd ({error}): install Debian's etcd-server (scripts/test does)")
            });
        let etcd = Self { child, plain_port, tls_port, _dir: dir };
        eventually(Duration::from_secs(30), "etcd answers", || {
            post(plain_port, "/v3/kv/range", &format!(r#"{{"key":"{}"}}"#, b64("/")))
                .ok()?
                .contains(" 200 ")
                .then_some(())
        });
        etcd
    }

    /// Turns authentication on: `root`, and `mend` with read-write on `/mend`.
    fn enable_auth(&self) {
        let setup = [
            ("/v3/auth/user/add", r#"{"name":"root","password":"rootpw"}"#.to_owned()),
            ("/v3/auth/role/add", r#"{"name":"root"}"#.to_owned()),
            ("/v3/auth/user/grant", r#"{"user":"root","role":"root"}"#.to_owned()),
            ("/v3/auth/user/add", r#"{"name":"mend","password":"s3cret"}"#.to_owned()),
            ("/v3/auth/role/add", r#"{"name":"fleet"}"#.to_owned()),
            (
                "/v3/auth/role/grant",
                format!(
                    r#"{{"name":"fleet","perm":{{"permType":"READWRITE","key":"{}","range_end":"{}"}}}}"#,
                    b64("/mend"),
                    b64("/mene")
                ),
            ),
            ("/v3/auth/user/grant", r#"{"user":"mend","role":"fleet"}"#.to_owned()),
            ("/v3/auth/enable", "{}".to_owned()),
        ];
        for (path, body) in setup {
            let answer = post(self.plain_port, path, &body).expect("etcd answers");
            assert!(answer.starts_with("HTTP/1.1 200"), "{path}: {answer}");
        }
    }

    fn config(&self, host: &str, tls: FleetTls) -> Fleet {
        let mut config = Fleet::with_endpoints(vec![format!("https://127.0.0.1:{}", self.tls_port)]);
        config.host = Some(host.to_owned());
        config.lease_ttl = Duration::from_secs(9);
        config.publish_every = Duration::from_secs(3);
        // A loaded test machine can take etcd (and its disk sync) past the 2 s default.
        config.permit_timeout = Duration::from_secs(10);
        config.tls = Some(tls);
        config
    }
}

fn start(config: Fleet) -> (FleetHandle, tokio::task::JoinHandle<()>) {
    let clock: Arc<dyn mend_types::Clock> = Arc::new(mend_types::SystemClock);
    FleetHandle::start(config, clock, Box::new(|| (Vec::new(), Vec::new()))).expect("the fleet starts")
}

async fn wait_view(fleet: &FleetHandle, limit: Duration, what: &str, check: impl Fn(&FleetView) -> bool) -> FleetView {
    let deadline = Instant::now() + limit;
    loop {
        let view = fleet.view();
        if check(&view) {
            return view;
        }
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for: {what}; view: {view:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn web_restart() -> PermitRequest {
    PermitRequest { service: "web".to_owned(), action: "restart".to_owned(), disrupts: true }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_18_over_tls_with_a_client_certificate_and_a_password_a_host_registers_leads_and_takes_permits() {
    let pki = Pki::make();
    let etcd = Etcd::start(&pki);
    etcd.enable_auth();
    let mut config = etcd.config("host-a", pki.tls("ca.pem", true, None));
    config.auth = Some(FleetAuth { user: "mend".to_owned(), password: "s3cret".to_owned() });
    let (fleet, task) = start(config);
    let view = wait_view(&fleet, Duration::from_secs(30), "registered and leading over TLS", |view| {
        view.reachable && view.leader.as_deref() == Some("host-a") && view.hosts.iter().any(|h| h.registered)
    })
    .await;
    let first_contact = view.last_contact_ms.expect("a contact");
    // Past several token lifetimes: the view keeps being read (each read after the token expired, the
    // token fetched again over TLS).
    tokio::time::sleep(Duration::from_secs(5)).await;
    let view = fleet.view();
    assert!(view.reachable, "{view:?}");
    assert!(view.last_contact_ms.is_some_and(|at| at > first_contact + 2000), "{view:?}");
    for action_id in 1..=2 {
        match fleet.permit(&web_restart(), action_id).await {
            PermitAnswer::Granted(permit) => {
                assert_eq!(permit.key(), Some(format!("/mend/permits/web/host-a/{action_id}").as_str()));
                fleet.release(permit).await;
            }
            other => panic!("no permit over TLS: {other:?}"),
        }
    }
    fleet.leave().await;
    task.abort();
}

/// Waits until `fleet` gives up on etcd with an error containing every one of `reasons`, then checks
/// that a permit is `Unreachable` (local budgets only) and says the same.
async fn refused(fleet: &FleetHandle, reasons: &[&str]) {
    let view = wait_view(fleet, Duration::from_secs(30), &format!("an error saying {reasons:?}"), |view| {
        view.error.as_deref().is_some_and(|e| reasons.iter().all(|reason| e.contains(reason)))
    })
    .await;
    assert!(!view.reachable && view.hosts.is_empty() && view.leader.is_none(), "{view:?}");
    match fleet.permit(&web_restart(), 1).await {
        PermitAnswer::Unreachable(why) => {
            // Not registered: the host never got a lease; the permit says so, and why.
            assert!(why.starts_with("this host is not registered with etcd ("), "{why}");
            assert!(reasons.iter().all(|reason| why.contains(reason)), "{why}");
        }
        other => panic!("a permit without etcd: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_18_a_wrong_ca_no_client_certificate_or_the_wrong_name_keep_a_host_out_and_say_why() {
    let pki = Pki::make();
    let etcd = Etcd::start(&pki);
    let endpoint = format!("127.0.0.1:{}", etcd.tls_port);

    // etcd's certificate is not signed by the CA this host trusts.
    let (wrong_ca, wrong_ca_task) = start(etcd.config("host-b", pki.tls("other-ca.pem", true, None)));
    refused(&wrong_ca, &[&format!("TLS handshake with etcd at {endpoint} failed"), "UnknownIssuer"]).await;

    // The server name checked instead of the endpoint's address is not in etcd's certificate.
    let (wrong_name, wrong_name_task) =
        start(etcd.config("host-c", pki.tls("ca.pem", true, Some("etcd.other.example"))));
    refused(&wrong_name, &[&format!("TLS handshake with etcd at {endpoint} failed"), "not valid for name"]).await;

    // No client certificate: etcd (--client-cert-auth) refuses it (with TLS 1.3, after the handshake).
    let (anonymous, anonymous_task) = start(etcd.config("host-d", pki.tls("ca.pem", false, None)));
    refused(&anonymous, &["HTTP exchange with etcd failed", "received fatal alert: BadCertificate"]).await;

    // A server name that etcd's certificate carries: in (the endpoint is an address, the name a name).
    let (renamed, renamed_task) = start(etcd.config("host-e", pki.tls("ca.pem", true, Some("localhost"))));
    wait_view(&renamed, Duration::from_secs(30), "registered over TLS as localhost", |view| {
        view.reachable && view.hosts.iter().any(|h| h.host == "host-e" && h.registered)
    })
    .await;
    assert!(matches!(renamed.permit(&web_restart(), 1).await, PermitAnswer::Granted(_)));
    renamed.leave().await;
    for task in [wrong_ca_task, wrong_name_task, anonymous_task, renamed_task] {
        task.abort();
    }
}

/// The error the fleet refuses to start with, causes included.
fn start_error(config: Fleet) -> String {
    let clock: Arc<dyn mend_types::Clock> = Arc::new(mend_types::SystemClock);
    match FleetHandle::start(config, clock, Box::new(|| (Vec::new(), Vec::new()))) {
        Ok(_) => panic!("the fleet started with unusable TLS settings"),
        Err(error) => {
            let mut text = error.to_string();
            let mut cause = std::error::Error::source(&error);
            while let Some(error) = cause {
                text.push_str(&format!(": {error}"));
                cause = error.source();
            }
            text
        }
    }
}

#[tokio::test]
async fn issue_18_tls_files_that_cannot_be_used_stop_the_fleet_at_start_naming_key_and_file() {
    let pki = Pki::make();
    let config = |tls: FleetTls| {
        let mut config = Fleet::with_endpoints(vec!["https://127.0.0.1:2379".to_owned()]);
        config.host = Some("host-x".to_owned());
        config.tls = Some(tls);
        config
    };
    let path = |name: &str| pki.path(name).display().to_string();
    let write = |name: &str, text: &str| std::fs::write(pki.path(name), text).expect("write");
    write("garbage.pem", "not a certificate\n");
    write("broken.pem", "-----BEGIN CERTIFICATE-----\nMIIB this is not base64 at all !!\n-----END CERTIFICATE-----\n");
    let cases: Vec<(FleetTls, String)> = vec![
        (
            pki.tls("missing.pem", false, None),
            format!("[fleet] ca_file {}: cannot be read: No such file or directory", path("missing.pem")),
        ),
        (
            pki.tls("garbage.pem", false, None),
            format!("[fleet] ca_file {}: holds no PEM certificate (-----BEGIN CERTIFICATE-----)", path("garbage.pem")),
        ),
        (pki.tls("broken.pem", false, None), format!("[fleet] ca_file {}: not valid PEM (", path("broken.pem"))),
        (
            FleetTls {
                identity: Some((pki.path("client.pem"), pki.path("client.pem"))),
                ..pki.tls("ca.pem", false, None)
            },
            format!(
                "[fleet] key_file {}: holds no PEM private key (PKCS#8, PKCS#1 or SEC1: -----BEGIN PRIVATE KEY-----)",
                path("client.pem")
            ),
        ),
        (
            FleetTls {
                identity: Some((pki.path("client-key.pem"), pki.path("client-key.pem"))),
                ..pki.tls("ca.pem", false, None)
            },
            format!("[fleet] cert_file {}: holds no PEM certificate", path("client-key.pem")),
        ),
        (
            FleetTls {
                identity: Some((pki.path("client.pem"), pki.path("server-key.pem"))),
                ..pki.tls("ca.pem", false, None)
            },
            format!(
                "[fleet] cert_file {} and key_file {}: not a certificate and its key",
                path("client.pem"),
                path("server-key.pem")
            ),
        ),
    ];
    for (tls, expected) in cases {
        let error = start_error(config(tls));
        assert!(error.starts_with(&expected), "expected {expected:?}, got {error:?}");
    }
    // An https:// endpoint without TLS settings, or a plain one with them: never a call in clear.
    let mut https_without = Fleet::with_endpoints(vec!["https://127.0.0.1:2379".to_owned()]);
    https_without.host = Some("host-x".to_owned());
    assert_eq!(
        start_error(https_without),
        "etcd: etcd endpoint \"127.0.0.1:2379\": https:// needs the TLS settings (ca_file)"
    );
    let mut plain_with = config(pki.tls("ca.pem", true, None));
    plain_with.endpoints = vec!["http://127.0.0.1:2379".to_owned()];
    assert_eq!(
        start_error(plain_with),
        "etcd: etcd endpoint \"127.0.0.1:2379\": not https:// while TLS is set: no call goes out in clear"
    );
}
