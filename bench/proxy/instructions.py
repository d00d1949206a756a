#!/usr/bin/env python3
"""Instructions per request of mend-proxy, under callgrind: repeatable on a noisy machine where wall-clock
and CPU-time figures move by tens of percent between runs.

Starts two mend-demo replicas and the example proxy (1 worker) under `valgrind --tool=callgrind`, warms
up, zeroes the counters (`callgrind_control -z`), sends a fixed number of keep-alive `GET /` requests
from `--connections` concurrent connections (the request wrk sends), dumps the counters
(`callgrind_control -d`) and prints instructions per request. All traffic stays on 127.0.0.1; the run is
bounded by the request count and a timeout. Usage (from the repo root):

  cargo build --release -p mend --bin mend-demo
  cargo build --release -p mend-proxy --example proxy
  apt-get install -y valgrind
  python3 bench/proxy/instructions.py [--requests 20000] [--connections 50] [--threads 1] [--keep FILE]

`--keep FILE` keeps the callgrind profile of the measured requests (read it with `callgrind_annotate`).
"""

import argparse
import glob
import os
import re
import selectors
import shutil
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
from bench import Replica, free_port, wait_port  # noqa: E402


def run_requests(port, total, connections, timeout=600.0):
    """Sends `total` GET requests over `connections` keep-alive connections; returns the statuses seen."""
    request = f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    selector = selectors.DefaultSelector()
    sent = done = 0
    statuses = {}
    for _ in range(min(connections, total)):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        sock.sendall(request)
        sent += 1
        selector.register(sock, selectors.EVENT_READ, bytearray())
    deadline = time.monotonic() + timeout
    while done < total:
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {done} of {total} requests")
        for key, _ in selector.select(timeout=1.0):
            sock, buffer = key.fileobj, key.data
            chunk = sock.recv(65536)
            if not chunk:
                raise RuntimeError("proxy closed a connection")
            buffer += chunk
            while True:
                end = buffer.find(b"\r\n\r\n")
                if end < 0:
                    break
                head = bytes(buffer[:end])
                length = int(re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head).group(1))
                if len(buffer) < end + 4 + length:
                    break
                status = int(head.split(b" ", 2)[1])
                statuses[status] = statuses.get(status, 0) + 1
                del buffer[: end + 4 + length]
                done += 1
                if sent < total:
                    sock.sendall(request)
                    sent += 1
    for key in list(selector.get_map().values()):
        key.fileobj.close()
    return statuses


def callgrind_total(path):
    with open(path) as f:
        for line in f:
            if line.startswith("summary:") or line.startswith("totals:"):
                return int(line.split()[1])
    raise RuntimeError(f"no totals in {path}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo", default=os.path.join(ROOT, "target/release/mend-demo"))
    parser.add_argument("--proxy", default=os.path.join(ROOT, "target/release/examples/proxy"))
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--warmup", type=int, default=2000)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--keep", help="copy the callgrind profile of the measured requests here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ups = [free_port(), free_port()]
        replicas = [Replica(args.demo, port) for port in ups]
        for replica in replicas:
            replica.start()
        port = free_port()
        argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/cg.out", args.proxy, "--listen",
                f"127.0.0.1:{port}", "--threads", str(args.threads)]
        for up in ups:
            argv += ["--upstream", f"127.0.0.1:{up}"]
        proxy = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_port(port, timeout=60)
            run_requests(port, args.warmup, args.connections)
            subprocess.run(["callgrind_control", "-z", str(proxy.pid)], check=True, capture_output=True)
            statuses = run_requests(port, args.requests, args.connections)
            subprocess.run(["callgrind_control", "-d", str(proxy.pid)], check=True, capture_output=True)
            dumps = sorted(glob.glob(f"{tmp}/cg.out*"), key=os.path.getmtime)
            dump = next(path for path in reversed(dumps) if path != f"{tmp}/cg.out")
            total = callgrind_total(dump)
            if args.keep:
                shutil.copy(dump, args.keep)
        finally:
            proxy.send_signal(2)
            try:
                proxy.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proxy.kill()
                proxy.wait()
            for replica in replicas:
                replica.stop()
    print(f"statuses {statuses}")
    print(f"instructions per request: {total / args.requests:.0f} ({total} over {args.requests} requests, "
          f"{args.connections} connections, {args.threads} thread(s))")


if __name__ == "__main__":
    main()
