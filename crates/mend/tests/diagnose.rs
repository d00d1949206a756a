//! End to end live diagnosis (issue 11): three real services calling each other through mend's proxies,
//! a fault injected into the last one, and the incident's diagnosis, ranking and action as the API and
//! the CLI show them. Real mend, real mend-demo replicas, real HTTP through the proxies.
#![allow(clippy::disallowed_methods)] // End-to-end tests wait in real time.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Daemon, eventually, get};
use serde_json::Value;

fn incidents(daemon: &Daemon) -> Vec<Value> {
    get(daemon.api, "/api/v1/incidents?limit=100").json()["incidents"].as_array().cloned().unwrap_or_default()
}

/// `web` → `orders` → `stock`, each behind its own proxy, callers naming themselves (`x-mend-caller`), and
/// a policy on `when`. The names are chosen so that neither alphabetical order nor the
/// order of the config puts the root first: only the ranking can. The rule fires on a 5xx share above
/// half, so that a stray 502 while the chain warms up opens nothing.
fn chain_config(ports: u16, proxies: [SocketAddr; 3], when: &str) -> String {
    let [web, orders, stock] = proxies;
    let service = |name: &str, port: u16, proxy: SocketAddr, upstream: Option<(SocketAddr, &str)>| {
        let (upstream_args, depends) = match upstream {
            Some((address, callee)) => {
                (format!(", \"--upstream\", \"http://{address}/\""), format!("depends_on = [\"{callee}\"]\n"))
            }
            None => (String::new(), String::new()),
        };
        format!(
            "[service.{name}]\ncommand = [\"{{demo}}\", \"--port\", \"{{port}}\", \"--name\", \"{name}\"{upstream_args}]\n\
             ports = \"{port}-{port}\"\n{depends}[service.{name}.readiness]\nhttp = \"http://127.0.0.1:{{port}}/health\"\n\
             [service.{name}.proxy]\nlisten = \"{proxy}\"\nejection_failures = 1000\n"
        )
    };
    format!(
        "[api]\nlisten = \"{{api}}\"\n{}{}{}\
         [[rule]]\nname = \"Errors\"\nexpr = 'sum by (service) (rate(mend_proxy_requests_total{{code=\"5xx\"}}[5s])) / sum by (service) (rate(mend_proxy_requests_total[5s])) > 0.5'\nfor = \"2s\"\n\
         [[heal]]\nwhen = \"{when}\"\nactions = [\"restart\"]\nverify = \"60s\"\n",
        service("stock", ports, stock, None),
        service("orders", ports + 1, orders, Some((stock, "stock"))),
        service("web", ports + 2, web, Some((orders, "orders"))),
    )
}

#[test]
fn issue_11_an_error_fault_at_the_end_of_a_chain_is_its_root_and_only_the_root_is_restarted() {
    let _cpu = common::cpu_to_myself();
    let ports = common::free_ports(6);
    let proxies: [SocketAddr; 3] = [3, 4, 5].map(|offset| ([127, 0, 0, 1], ports + offset).into());
    let daemon = Daemon::start(&chain_config(ports, proxies, "dependency_failure"));
    let pids: Vec<u32> = ["web", "orders", "stock"].iter().flat_map(|service| daemon.wait_ready(service)).collect();

    // Traffic into the chain's head; the baseline is what the proxies saw before the fault.
    let stop = Arc::new(AtomicBool::new(false));
    let load = common::load(proxies[0], "/", 2, 20_000, Duration::from_millis(25), stop.clone());
    load.wait_for_more(20);
    let samples = "count_over_time(mend_proxy_requests_total{service=\"stock\",release=\"stable\",code=\"2xx\"}[1h])";
    let before = daemon.query(samples);
    eventually(Duration::from_secs(90), "35 more seconds of the proxies' figures", || {
        (daemon.query(samples) >= before + 35.0).then_some(())
    });
    assert!(incidents(&daemon).is_empty(), "nothing before the fault: {:?}", incidents(&daemon));

    let stock: SocketAddr = ([127, 0, 0, 1], ports).into();
    assert_eq!(common::http("POST", stock, "/fault/errors?rate=1", &[]).expect("fault").status, 200);

    let opened =
        eventually(Duration::from_secs(60), "the errors open an incident", || incidents(&daemon).into_iter().next());
    let id = opened["id"].as_u64().expect("an id");
    // The restart clears the fault (it lives in the process): every signal resolves.
    let resolved = eventually(Duration::from_secs(120), "the incident resolves", || {
        let incident = get(daemon.api, &format!("/api/v1/incidents/{id}")).json();
        (incident["state"] == "resolved").then_some(incident)
    });
    stop.store(true, Ordering::Relaxed);
    let report = load.join();

    let all = incidents(&daemon);
    assert_eq!(all.len(), 1, "one incident for the whole chain: {all:#?}");
    let diagnosis = &resolved["diagnosis"];
    let ranking: Vec<(&str, &str, Option<&str>)> = diagnosis["ranking"]
        .as_array()
        .map(|ranked| {
            ranked
                .iter()
                .map(|r| {
                    (
                        r["service"].as_str().unwrap_or(""),
                        r["diagnosis"].as_str().unwrap_or(""),
                        r["explained_by"].as_str(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        ranking,
        [
            ("stock", "unknown", None),
            ("orders", "dependency_failure", Some("stock")),
            ("web", "dependency_failure", Some("orders"))
        ],
        "{diagnosis:#}\n{}",
        daemon.log_text()
    );
    assert_eq!(diagnosis["root"], "stock", "{diagnosis:#}");
    assert_eq!(diagnosis["victims"], serde_json::json!(["orders", "web"]), "{diagnosis:#}");
    let facts = diagnosis["facts"].as_array().cloned().unwrap_or_default();
    assert!(
        facts
            .first()
            .and_then(Value::as_str)
            .is_some_and(|fact| fact.starts_with("mend_proxy_error_ratio of stock rose from 0%")),
        "the root's evidence is its error ratio: {diagnosis:#}"
    );
    let orders_evidence = diagnosis["ranking"][1]["evidence"][0].as_str().unwrap_or("");
    assert!(orders_evidence.contains("stock is called by orders"), "{orders_evidence}");

    // The policy on `dependency_failure` acted on the root: one restart of stock, nothing on its victims.
    let actions: Vec<(String, String, String)> = resolved["action_records"]
        .as_array()
        .map(|records| {
            records
                .iter()
                .map(|a| {
                    (
                        a["action"]["kind"].as_str().unwrap_or("").to_owned(),
                        a["service"].as_str().unwrap_or("").to_owned(),
                        a["state"].as_str().unwrap_or("").to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(actions, [("restart".to_owned(), "stock".to_owned(), "succeeded".to_owned())], "{resolved:#}");
    let reason = resolved["action_records"][0]["reason"].as_str().unwrap_or("");
    assert!(reason.contains(", a victim of stock: acting on stock"), "{reason}");
    assert_eq!(daemon.replica("web", 0)["pid"].as_u64(), Some(u64::from(pids[0])), "web was left alone");
    assert_eq!(daemon.replica("orders", 0)["pid"].as_u64(), Some(u64::from(pids[1])), "orders was left alone");
    assert_ne!(daemon.replica("stock", 0)["pid"].as_u64(), Some(u64::from(pids[2])), "stock was restarted");
    assert!(report.ok > 100, "traffic flowed: {report:?}");

    // `mend incident ID` shows the diagnosis, its evidence and the ranking.
    let output = daemon.cli(&["incident", &id.to_string()]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("root: stock, victims: orders, web"), "{text}");
    assert!(text.contains("evidence:\n  mend_proxy_error_ratio of stock rose from 0%"), "{text}");
    assert!(text.contains("1. stock"), "{text}");
    assert!(text.contains("2. orders           dependency_failure"), "{text}");
}

/// The incident's ranking as (service, diagnosis, explained by).
fn ranking(incident: &Value) -> Vec<(String, String, Option<String>)> {
    incident["diagnosis"]["ranking"]
        .as_array()
        .map(|ranked| {
            ranked
                .iter()
                .map(|r| {
                    (
                        r["service"].as_str().unwrap_or("").to_owned(),
                        r["diagnosis"].as_str().unwrap_or("").to_owned(),
                        r["explained_by"].as_str().map(str::to_owned),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A failing health check at the end of the chain: `stock` leaves the ready set, its proxy answers 503,
/// its callers 502. The root's own diagnosis names the incident (`unhealthy`, from its probe failures and
/// its leaving the ready set), and a policy on `unhealthy` restarts it, and nothing else. (A first run
/// ranked `orders` first here: its CPU, whole percents, fell a point before the fault; a caller gathered
/// to find the victims is no longer a root for being there.)
#[test]
fn issue_11_a_failing_health_check_at_the_end_of_a_chain_is_diagnosed_unhealthy_at_the_root() {
    let _cpu = common::cpu_to_myself();
    let ports = common::free_ports(6);
    let proxies: [SocketAddr; 3] = [3, 4, 5].map(|offset| ([127, 0, 0, 1], ports + offset).into());
    let daemon = Daemon::start(&chain_config(ports, proxies, "unhealthy"));
    let pids: Vec<u32> = ["web", "orders", "stock"].iter().flat_map(|service| daemon.wait_ready(service)).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let load = common::load(proxies[0], "/", 2, 20_000, Duration::from_millis(25), stop.clone());
    load.wait_for_more(20);
    let samples = "count_over_time(mend_proxy_requests_total{service=\"stock\",release=\"stable\",code=\"2xx\"}[1h])";
    let before = daemon.query(samples);
    eventually(Duration::from_secs(90), "35 more seconds of the proxies' figures", || {
        (daemon.query(samples) >= before + 35.0).then_some(())
    });
    assert!(incidents(&daemon).is_empty(), "nothing before the fault: {:?}", incidents(&daemon));

    let stock: SocketAddr = ([127, 0, 0, 1], ports).into();
    assert_eq!(common::http("POST", stock, "/fault/unhealthy", &[]).expect("fault").status, 200);
    let opened = eventually(Duration::from_secs(60), "the failing check opens an incident", || {
        incidents(&daemon).into_iter().next()
    });
    let id = opened["id"].as_u64().expect("an id");
    let resolved = eventually(Duration::from_secs(120), "the incident resolves", || {
        let incident = get(daemon.api, &format!("/api/v1/incidents/{id}")).json();
        (incident["state"] == "resolved").then_some(incident)
    });
    stop.store(true, Ordering::Relaxed);
    load.join();

    assert_eq!(incidents(&daemon).len(), 1, "one incident for the whole chain: {:#?}", incidents(&daemon));
    let diagnosis = &resolved["diagnosis"];
    assert_eq!(
        (diagnosis["name"].as_str(), diagnosis["root"].as_str()),
        (Some("unhealthy"), Some("stock")),
        "{diagnosis:#}\n{}",
        daemon.log_text()
    );
    // The restart may come before the callers' own rules fire: orders is a victim as stock's caller, web
    // too once its errors joined.
    let victims: Vec<&str> =
        diagnosis["victims"].as_array().map(|v| v.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
    assert!(victims.contains(&"orders") && victims.iter().all(|v| ["orders", "web"].contains(v)), "{diagnosis:#}");
    let ranked = ranking(&resolved);
    assert_eq!(ranked.first().map(|r| (r.0.as_str(), r.1.as_str())), Some(("stock", "unhealthy")), "{ranked:?}");
    let facts: Vec<&str> =
        diagnosis["facts"].as_array().map(|f| f.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
    assert!(facts.first().is_some_and(|fact| fact.starts_with("replica 0 not ready since ")), "{facts:?}");
    let actions: Vec<(&str, &str)> = resolved["action_records"]
        .as_array()
        .map(|records| {
            records
                .iter()
                .map(|a| (a["action"]["kind"].as_str().unwrap_or(""), a["service"].as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(actions, [("restart", "stock")], "{resolved:#}");
    assert_eq!(daemon.replica("web", 0)["pid"].as_u64(), Some(u64::from(pids[0])), "web was left alone");
    assert_eq!(daemon.replica("orders", 0)["pid"].as_u64(), Some(u64::from(pids[1])), "orders was left alone");
    assert_ne!(daemon.replica("stock", 0)["pid"].as_u64(), Some(u64::from(pids[2])), "stock was restarted");
}

/// The same chain of services that know nothing of mend: no `x-mend-caller`, no `depends_on`, but each
/// passes the W3C trace context it received on to its upstream (as HTTP libraries with OpenTelemetry do).
/// The proxies' spans alone give the diagnosis its call graph and the figures of each call: the root is
/// still named, its callers are its victims, and their evidence shows what their calls did.
#[test]
fn issue_16_trace_context_alone_gives_the_diagnosis_its_call_graph_and_the_calls_figures() {
    let _cpu = common::cpu_to_myself();
    let ports = common::free_ports(6);
    let proxies: [SocketAddr; 3] = [3, 4, 5].map(|offset| ([127, 0, 0, 1], ports + offset).into());
    let config: String = chain_config(ports, proxies, "dependency_failure")
        .replace(", \"--upstream\"", ", \"--anonymous\", \"--propagate-trace\", \"--upstream\"")
        .lines()
        .filter(|line| !line.starts_with("depends_on"))
        .map(|line| format!("{line}\n"))
        .collect();
    let daemon = Daemon::start(&format!("{config}[tracing]\nratio = 1.0\n"));
    let pids: Vec<u32> = ["web", "orders", "stock"].iter().flat_map(|service| daemon.wait_ready(service)).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let load = common::load(proxies[0], "/", 2, 20_000, Duration::from_millis(25), stop.clone());
    load.wait_for_more(20);
    let samples = "count_over_time(mend_proxy_requests_total{service=\"stock\",release=\"stable\",code=\"2xx\"}[1h])";
    let before = daemon.query(samples);
    eventually(Duration::from_secs(90), "35 more seconds of the proxies' figures", || {
        (daemon.query(samples) >= before + 35.0).then_some(())
    });
    assert!(incidents(&daemon).is_empty(), "nothing before the fault: {:?}", incidents(&daemon));
    // No proxy learnt an edge from a caller header: only trace context links the services.
    let header_edges = daemon.query("count(mend_proxy_edge_requests_total)");
    assert!(header_edges.is_nan() || header_edges == 0.0, "no x-mend-caller edge: {header_edges}");

    let stock: SocketAddr = ([127, 0, 0, 1], ports).into();
    assert_eq!(common::http("POST", stock, "/fault/errors?rate=1", &[]).expect("fault").status, 200);
    let opened =
        eventually(Duration::from_secs(60), "the errors open an incident", || incidents(&daemon).into_iter().next());
    let id = opened["id"].as_u64().expect("an id");
    let resolved = eventually(Duration::from_secs(120), "the incident resolves", || {
        let incident = get(daemon.api, &format!("/api/v1/incidents/{id}")).json();
        (incident["state"] == "resolved").then_some(incident)
    });
    stop.store(true, Ordering::Relaxed);
    load.join();

    let diagnosis = &resolved["diagnosis"];
    let ranked = ranking(&resolved);
    let explained: Vec<(&str, &str, Option<&str>)> =
        ranked.iter().map(|(service, name, by)| (service.as_str(), name.as_str(), by.as_deref())).collect();
    assert_eq!(
        explained,
        [
            ("stock", "unknown", None),
            ("orders", "dependency_failure", Some("stock")),
            ("web", "dependency_failure", Some("orders"))
        ],
        "{diagnosis:#}\n{}",
        daemon.log_text()
    );
    assert_eq!(diagnosis["root"], "stock", "{diagnosis:#}");
    // The victims' evidence: the figures of their calls, from the spans (error share and p99).
    let evidence = |rank: usize| -> Vec<String> {
        diagnosis["ranking"][rank]["evidence"]
            .as_array()
            .map(|lines| lines.iter().filter_map(Value::as_str).map(str::to_owned).collect())
            .unwrap_or_default()
    };
    let calls = evidence(1).into_iter().find(|line| line.starts_with("calls from orders to stock: "));
    assert!(
        calls.as_ref().is_some_and(|line| line.contains("% failed, p99 ")),
        "orders' evidence shows its calls to stock: {:?}",
        evidence(1)
    );
    // Only the root was acted on.
    let actions: Vec<(&str, &str)> = resolved["action_records"]
        .as_array()
        .map(|records| {
            records
                .iter()
                .map(|a| (a["action"]["kind"].as_str().unwrap_or(""), a["service"].as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(actions, [("restart", "stock")], "{resolved:#}");
    assert_eq!(daemon.replica("web", 0)["pid"].as_u64(), Some(u64::from(pids[0])), "web was left alone");
    assert_eq!(daemon.replica("orders", 0)["pid"].as_u64(), Some(u64::from(pids[1])), "orders was left alone");
}
