#!/usr/bin/env python3
"""The plain region-write path, timed: three `geosaga region` processes on loopback (no
injected latency, SQLite), and a client that sends region steps' writes to us-east one at
a time, each with its own op_id as a saga step's would: `put` async, `put` strong, and an
`add` (PATCH) strong, to keys homed at us-east. Prints p50, p90 and mean per kind.

Used for docs/benchmarks-transactions.md ("What transactions cost the region-step path"):
run it alternately with two builds of `geosaga` and compare.

    python3 bench/scripts/region_writes.py --geosaga target/debug/geosaga --writes 300
"""

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

NAMES = ["us-east", "eu-west", "ap-south"]
PREFIXES = ["us/", "eu/", "ap/"]
SETTINGS = 'quorum = "quorum"\nstrong_timeout_ms = 3000\nclosed_ts_interval_ms = 50\nmax_clock_offset_ms = 10\n'


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(geosaga, directory):
    ports = [free_port() for _ in NAMES]
    text = SETTINGS + "\n"
    for name, port in zip(NAMES, ports):
        text += (
            f'[[regions]]\nname = "{name}"\naddress = "http://127.0.0.1:{port}"\n'
            f'listen = "127.0.0.1:{port}"\ndata = "{directory}/{name}.db"\n\n'
        )
    for prefix, name in zip(PREFIXES, NAMES):
        text += f'[[rules]]\nprefix = "{prefix}"\nregion = "{name}"\n\n'
    config = os.path.join(directory, "regions.toml")
    with open(config, "w") as f:
        f.write(text)
    processes = []
    for name in NAMES:
        log = open(os.path.join(directory, f"{name}.log"), "w")
        processes.append(
            subprocess.Popen([geosaga, "region", "--config", config, "--name", name], stdout=log, stderr=log)
        )
    for port in ports:
        deadline = time.time() + 60
        while True:
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                c.request("GET", "/readyz")
                if c.getresponse().status == 200:
                    break
            except OSError:
                pass
            if time.time() > deadline:
                sys.exit(f"region on port {port} not ready")
            time.sleep(0.1)
    return processes, ports


def timed(conn, method, path, body):
    started = time.perf_counter()
    conn.request(method, path, body=json.dumps(body), headers={"content-type": "application/json"})
    response = conn.getresponse()
    response.read()
    elapsed = (time.perf_counter() - started) * 1000
    if response.status != 200:
        sys.exit(f"{method} {path}: {response.status}")
    return elapsed


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--geosaga", required=True)
    parser.add_argument("--writes", type=int, default=300)
    parser.add_argument("--label", default="")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        processes, ports = start(os.path.abspath(args.geosaga), directory)
        try:
            conn = http.client.HTTPConnection("127.0.0.1", ports[0], timeout=10)
            run = str(time.time_ns())
            kinds = {
                "put async": lambda i: ("PUT", f"/v1/kv/us/a{i % 50}",
                                        {"value": {"n": i}, "consistency": "async", "op_id": f"{run}-a{i}"}),
                "put strong": lambda i: ("PUT", f"/v1/kv/us/s{i % 50}",
                                         {"value": {"n": i}, "consistency": "strong", "op_id": f"{run}-s{i}"}),
                "add strong": lambda i: ("PATCH", f"/v1/kv/us/b{i % 50}",
                                         {"add": {"path": "/balance", "delta": 1}, "op_id": f"{run}-b{i}"}),
            }
            for kind, make in kinds.items():
                for i in range(20):  # warm-up
                    timed(conn, *make(10_000_000 + i))
                samples = sorted(timed(conn, *make(i)) for i in range(args.writes))
                p50 = samples[len(samples) // 2]
                p90 = samples[len(samples) * 9 // 10]
                print(f"{args.label}\t{kind}\tp50 {p50:.2f}\tp90 {p90:.2f}\tmean {statistics.mean(samples):.2f}")
        finally:
            for p in processes:
                p.kill()
                p.wait()


if __name__ == "__main__":
    main()
