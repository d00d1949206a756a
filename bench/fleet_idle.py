#!/usr/bin/env python3
"""The idle cost of fleet mode: mend's own CPU and RSS supervising one idle mend-demo replica, without
[fleet] and then with [fleet] against a real etcd (started here on loopback with a temp data dir, as the
tests do). Each run warms up for 5 s, then measures mend's CPU time over --seconds and its RSS at the end.

    python3 bench/fleet_idle.py --mend target/debug/mend --demo target/debug/mend-demo --seconds 60
"""
import argparse, os, shutil, signal, socket, subprocess, tempfile, time, urllib.request

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

def ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime

def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0

def wait_http(url, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                return r.read()
        except Exception:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not answer within {timeout}s")

def run(mend, demo, fleet, seconds, workdir):
    api = free_port()
    port = free_port()
    config = f"""[api]
listen = "127.0.0.1:{api}"
[service.web]
command = ["{demo}", "--port", "{{port}}"]
ports = "{port}-{port}"
[service.web.liveness]
http = "http://127.0.0.1:{{port}}/health"
{fleet}"""
    state = tempfile.mkdtemp(dir=workdir)
    path = os.path.join(state, "mend.toml")
    with open(path, "w") as f:
        f.write(config)
    log = open(os.path.join(state, "mend.log"), "w")
    child = subprocess.Popen([mend, "run", "-c", path, "--state-dir", os.path.join(state, "state")], stderr=log, stdout=subprocess.DEVNULL)
    try:
        wait_http(f"http://127.0.0.1:{api}/healthz")
        time.sleep(5)
        hz = os.sysconf("SC_CLK_TCK")
        before, started = ticks(child.pid), time.time()
        time.sleep(seconds)
        cpu = (ticks(child.pid) - before) / hz / (time.time() - started) * 100
        return cpu, rss_kib(child.pid) / 1024
    finally:
        child.send_signal(signal.SIGTERM)
        child.wait(timeout=30)

def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--mend", required=True)
    parser.add_argument("--demo", required=True)
    parser.add_argument("--seconds", type=int, default=60)
    args = parser.parse_args()
    if shutil.which("etcd") is None:
        raise SystemExit("etcd is missing: install Debian's etcd-server")
    workdir = tempfile.mkdtemp()
    client, peer = free_port(), free_port()
    etcd = subprocess.Popen(["etcd", "--name", "bench", "--data-dir", os.path.join(workdir, "etcd"),
        "--listen-client-urls", f"http://127.0.0.1:{client}", "--advertise-client-urls", f"http://127.0.0.1:{client}",
        "--listen-peer-urls", f"http://127.0.0.1:{peer}", "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
        "--initial-cluster", f"bench=http://127.0.0.1:{peer}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http(f"http://127.0.0.1:{client}/health")
        fleet = f'[fleet]\nendpoints = ["http://127.0.0.1:{client}"]\nhost = "bench"\n'
        for name, table in [("without [fleet]", ""), ("with [fleet]", fleet)]:
            cpu, rss = run(args.mend, args.demo, table, args.seconds, workdir)
            print(f"{name}: mend CPU {cpu:.2f} % over {args.seconds} s, RSS {rss:.1f} MiB")
    finally:
        etcd.terminate()
        etcd.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)

if __name__ == "__main__":
    main()
