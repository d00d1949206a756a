//! The fleet against a real etcd with authentication on (Debian's `etcd-server`, started here on loopback
//! with a temp data directory and a 1 s token TTL): a host with the right user registers, leads and takes
//! a permit, its token expiring between its calls and fetched again; a host with a wrong password never
//! reaches the fleet and says why.

#![allow(clippy::disallowed_methods)] // Waits in real time for a real etcd.

mod support;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mend_config::{Fleet, FleetAuth};
use mend_fleet::{FleetHandle, FleetView, PermitAnswer, PermitRequest};
use support::{b64, eventually, free_port, post};

/// A real etcd on loopback, killed on drop.
struct Etcd {
    child: Child,
    client_port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Etcd {
    /// Starts etcd and turns authentication on: `root`, and `mend` with read-write on `/mend`.
    fn start_with_auth() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let (client_port, peer_port) = (free_port(), free_port());
        let client = format!("http://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let child = Command::new("etcd")
            .args(["--name", "auth-test", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("auth-test={peer}")])
            // Tokens expire 1 s after their last use: the fleet's calls come further apart than that.
            .args(["--auth-token", "simple", "--auth-token-ttl", "1"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| {
                panic!("cannot run etcd ({error}): install Debian's etcd-server (scripts/test does)")
            });
        let etcd = Self { child, client_port, _dir: dir };
        eventually(Duration::from_secs(30), "etcd answers", || {
            post(client_port, "/v3/kv/range", &format!(r#"{{"key":"{}"}}"#, b64("/")))
                .ok()?
                .contains(" 200 ")
                .then_some(())
        });
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
            let answer = post(client_port, path, &body).expect("etcd answers");
            assert!(answer.starts_with("HTTP/1.1 200"), "{path}: {answer}");
        }
        etcd
    }

    fn config(&self, host: &str, password: &str) -> Fleet {
        let mut config = Fleet::with_endpoints(vec![format!("http://127.0.0.1:{}", self.client_port)]);
        config.host = Some(host.to_owned());
        config.lease_ttl = Duration::from_secs(9);
        config.publish_every = Duration::from_secs(3);
        config.auth = Some(FleetAuth { user: "mend".to_owned(), password: password.to_owned() });
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_etcd_auth_a_host_registers_leads_and_takes_permits_across_expired_tokens() {
    let etcd = Etcd::start_with_auth();
    let (fleet, task) = start(etcd.config("host-a", "s3cret"));
    let view = wait_view(&fleet, Duration::from_secs(30), "registered and leading", |view| {
        view.reachable && view.leader.as_deref() == Some("host-a") && view.hosts.iter().any(|h| h.registered)
    })
    .await;
    let first_contact = view.last_contact_ms.expect("a contact");
    // Past several token lifetimes: the view keeps being read (each read after the token expired).
    tokio::time::sleep(Duration::from_secs(5)).await;
    let view = fleet.view();
    assert!(view.reachable, "{view:?}");
    assert!(view.last_contact_ms.is_some_and(|at| at > first_contact + 2000), "{view:?}");
    let request = PermitRequest { service: "web".to_owned(), action: "restart".to_owned(), disrupts: true };
    match fleet.permit(&request, 1).await {
        PermitAnswer::Granted(permit) => {
            assert_eq!(permit.key(), Some("/mend/permits/web/host-a/1"));
            fleet.release(permit).await;
        }
        other => panic!("no permit: {other:?}"),
    }
    fleet.leave().await;
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_wrong_password_the_host_stays_out_and_says_why() {
    let etcd = Etcd::start_with_auth();
    let (fleet, task) = start(etcd.config("host-b", "wrong"));
    let view = wait_view(&fleet, Duration::from_secs(30), "the authentication error", |view| {
        view.error.as_deref().is_some_and(|e| e.contains("authentication failed"))
    })
    .await;
    assert!(!view.reachable && view.hosts.is_empty(), "{view:?}");
    assert!(view.error.as_deref().is_some_and(|e| e.contains("/v3/auth/authenticate")), "{view:?}");
    let request = PermitRequest { service: "web".to_owned(), action: "restart".to_owned(), disrupts: true };
    assert!(matches!(fleet.permit(&request, 1).await, PermitAnswer::Unreachable(_)));
    task.abort();
}
