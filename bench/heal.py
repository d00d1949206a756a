#!/usr/bin/env python3
"""Healing benchmark: time from a fault to mend's first action and to the incident's end, per scenario.

Each run starts a fresh `mend run` (its own state directory and ports), waits until the service is ready,
injects the fault at t0 (wall clock), then reads the journal through the API: the first action's
`started_at` and the incident's `closed_at` (resolved or escalated), both stamped by mend. Scenarios:

  crash_loop   mend-demo exits at start; restart_limit 3 within 1m -> gave_up -> crash_loop -> escalated
               to a webhook (the default policy). t0: mend started. Action: the escalation.
  hang         kill -STOP a replica: the supervisor replaces it (no policy needed); the built-in `hung`
               incident resolves when the replica is ready again. No policy action: "action" is the
               replica's replacement (its `restarted` event).
  alert        an Alertmanager alert names a replica; policy: restart; the alert is resolved once the
               restart is done. Decision and restart latency.
  bad_replica  errors on one of two replicas behind mend's proxy under load; policy: eject 10s, restart
               (verify 45s): the ejection does not hold, the restart does.
  python_cpu   the worked example (examples/heal.toml): a Python service burns a core; the default
               detector on its CPU series fires; policy: restart. t0: the burn (after the detector's
               30-point warm-up).

    python3 bench/heal.py --runs 5 --json /tmp/heal.json [--only alert,hang]
"""

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port(n=1):
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            first = s.getsockname()[1]
        if first + n >= 65000:
            continue
        ok = True
        for port in range(first, first + n):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    ok = False
        if ok:
            return first


def http(method, url, body=None, timeout=5):
    data = body.encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        body = response.read()
    try:
        return json.loads(body or b"null")
    except ValueError:
        # mend-demo's fault knobs answer in plain text.
        return body.decode(errors="replace")


def wait(what, condition, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = condition()
        except Exception:
            value = None
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError(what)


def now_ms():
    return int(time.time() * 1000)


def parse_ts(text):
    # RFC 3339 with milliseconds, UTC: 2026-12-07T02:18:11.123Z
    import datetime
    if isinstance(text, int):
        return text
    return int(datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc).timestamp() * 1000)


class Mend:
    def __init__(self, args, config):
        self.dir = tempfile.TemporaryDirectory()
        self.api = f"127.0.0.1:{free_port()}"
        path = os.path.join(self.dir.name, "mend.toml")
        with open(path, "w") as f:
            f.write(f'[api]\nlisten = "{self.api}"\n' + config)
        self.process = subprocess.Popen(
            [args.mend, "run", "-c", path, "--state-dir", os.path.join(self.dir.name, "state"), "--log", "warn"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait("mend answers", lambda: http("GET", f"http://{self.api}/api/v1/services"), 15)

    def get(self, path):
        return http("GET", f"http://{self.api}{path}")

    def ready(self, service):
        return wait(f"{service} ready", lambda: all(r["ready"] for r in self.get(f"/api/v1/services/{service}")["replicas"]) and
                    self.get(f"/api/v1/services/{service}")["replicas"], 30)

    def closed_incident(self, timeout, diagnosis=None):
        def find():
            for incident in self.get("/api/v1/incidents?limit=100")["incidents"]:
                if incident["state"] in ("resolved", "escalated") and (diagnosis is None or incident["diagnosis"]["name"] == diagnosis):
                    return incident
        return wait("an incident closes", find, timeout)

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.dir.cleanup()


def timings(t0, incident, action_kind=None):
    actions = [a for a in incident["action_records"] if action_kind is None or a["action"]["kind"] == action_kind]
    action = parse_ts(actions[0]["started_at"]) - t0 if actions and actions[0].get("started_at") else None
    return {"to_action_ms": action, "to_closed_ms": parse_ts(incident["closed_at"]) - t0, "state": incident["state"]}


def demo_service(args, ports, replicas=1, extra=""):
    return (f'[service.web]\ncommand = ["{args.demo}", "--port", "{{port}}"]\nports = "{ports}-{ports + 3}"\n'
            f'replicas = {replicas}\n[service.web.liveness]\nhttp = "http://127.0.0.1:{{port}}/health"\n{extra}')


def receiver():
    import http.server

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *a):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def crash_loop(args):
    server = receiver()
    t0 = now_ms()
    mend = Mend(args, f'[service.loop]\ncommand = ["{args.demo}", "--exit-immediately", "3"]\n'
                      '[service.loop.restart_limit]\nmax_restarts = 3\nwithin = "1m"\n'
                      '[service.loop.backoff]\ninitial = "50ms"\nmax = "200ms"\n'
                      f'[notify.ops]\nurl = "http://127.0.0.1:{server.server_address[1]}/"\n')
    try:
        return timings(t0, mend.closed_incident(60, "crash_loop"), "escalate")
    finally:
        mend.stop()
        server.shutdown()


def hang(args):
    mend = Mend(args, demo_service(args, free_port(4)))
    try:
        pid = mend.ready("web")[0]["pid"]
        time.sleep(1)
        t0 = now_ms()
        os.kill(pid, signal.SIGSTOP)
        incident = mend.closed_incident(30, "hung")
        restarted = [e for e in mend.get("/api/v1/events?kind=restarted&limit=10")["events"]]
        result = timings(t0, incident)
        result["to_action_ms"] = parse_ts(restarted[-1]["at"]) - t0 if restarted else None
        os.kill(pid, signal.SIGKILL) if os.path.exists(f"/proc/{pid}") else None
        return result
    finally:
        mend.stop()


def alert(args):
    mend = Mend(args, demo_service(args, free_port(4), 2, '[[heal]]\nwhen = "alert:Sick"\nactions = ["restart"]\nverify = "5s"\n'))
    try:
        mend.ready("web")
        body = lambda status: json.dumps({"version": "4", "status": status, "alerts": [
            {"status": status, "labels": {"alertname": "Sick", "service": "web", "replica": "1"}, "annotations": {}}]})
        t0 = now_ms()
        http("POST", f"http://{mend.api}/api/v1/alerts", body("firing"))
        wait("the restart is done", lambda: any(a["state"] == "succeeded" for a in mend.get("/api/v1/actions")["actions"]), 60)
        http("POST", f"http://{mend.api}/api/v1/alerts", body("resolved"))
        return timings(t0, mend.closed_incident(30), "restart")
    finally:
        mend.stop()


def load(url, stop):
    while not stop.is_set():
        try:
            urllib.request.urlopen(url, timeout=2).read()
        except Exception:
            pass
        time.sleep(0.01)


def bad_replica(args):
    ports = free_port(5)
    config = demo_service(args, ports, 2,
                          f'[service.web.proxy]\nlisten = "127.0.0.1:{ports + 4}"\nejection_failures = 1000\n'
                          '[[heal]]\nwhen = "bad_replica"\nactions = ["eject 10s", "restart"]\nverify = "45s"\n')
    mend = Mend(args, config)
    stop = threading.Event()
    threads = [threading.Thread(target=load, args=(f"http://127.0.0.1:{ports + 4}/", stop), daemon=True) for _ in range(2)]
    try:
        mend.ready("web")
        for thread in threads:
            thread.start()
        time.sleep(3)
        t0 = now_ms()
        http("POST", f"http://127.0.0.1:{ports + 1}/fault/errors?rate=0.6")
        return timings(t0, mend.closed_incident(240, "bad_replica"), "eject") | {
            "to_restart_ms": timings(t0, mend.closed_incident(1, "bad_replica"), "restart")["to_action_ms"]}
    finally:
        stop.set()
        mend.stop()


def python_cpu(args):
    port = free_port()
    with open(os.path.join(ROOT, "examples/heal.toml")) as f:
        config = f.read().replace("heal/app.py", os.path.join(ROOT, "examples/heal/app.py")).replace('ports = "9301"', f'ports = "{port}"')
    mend = Mend(args, config)
    try:
        mend.ready("app")
        wait("35 points", lambda: float((mend.get("/api/v1/query?query=count_over_time(app_cpu_percent%5B5m%5D)")["data"]["result"] or [{"value": [0, "0"]}])[0]["value"][1]) >= 35, 90)
        t0 = now_ms()
        http("POST", f"http://127.0.0.1:{port}/burn")
        return timings(t0, mend.closed_incident(240), "restart")
    finally:
        mend.stop()


SCENARIOS = {"crash_loop": crash_loop, "hang": hang, "alert": alert, "bad_replica": bad_replica, "python_cpu": python_cpu}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mend", default="target/release/mend")
    parser.add_argument("--demo", default="target/release/mend-demo")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--only", help="comma-separated: " + ",".join(SCENARIOS))
    parser.add_argument("--json")
    args = parser.parse_args()
    args.mend, args.demo = os.path.abspath(args.mend), os.path.abspath(args.demo)
    chosen = args.only.split(",") if args.only else list(SCENARIOS)
    results = {}
    for name in chosen:
        runs = []
        for _ in range(args.runs):
            runs.append(SCENARIOS[name](args))
        results[name] = runs
        med = lambda key: statistics.median([r[key] for r in runs if r.get(key) is not None] or [float("nan")])
        extra = f" to_restart median={med('to_restart_ms') / 1000:7.2f} s" if name == "bad_replica" else ""
        print(f"{name:12} n={len(runs)} to_action median={med('to_action_ms') / 1000:7.2f} s "
              f"to_closed median={med('to_closed_ms') / 1000:7.2f} s states={sorted(set(r['state'] for r in runs))}{extra}",
              flush=True)
        # Written after each scenario, so that a scenario that fails keeps the others' runs.
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
