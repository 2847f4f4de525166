#!/usr/bin/env python3
"""Verification time by answer, over HTTP against the real binary (driven by ops/bench/timing/run).

Starts keyledger (temporary data directory, loopback), makes keys of every kind through the API
(valid, revoked, compromised, expired; never issued; malformed), then sends POST /v1/verify on
one keep-alive connection with the kinds interleaved at random, and prints per answer the
median, p90 and p99 latency and their ratio to VALID's. Standard library only; the server
helpers are the hostile-client benchmark's.
"""
import argparse
import os
import random
import shutil
import socket
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "hostile"))
import hostile  # noqa: E402  (start_server, api, verify_request, BlockingReader, pct)

KINDS = ["VALID", "NOT_FOUND", "REVOKED", "EXPIRED", "COMPROMISED", "MALFORMED"]


def make_keys(host, port, data, per_kind):
    admin = open(os.path.join(data, "bootstrap-token")).read().strip()
    api = hostile.api

    def token(name, scopes):
        st, r = api(host, port, "POST", "/v1/tokens", admin, {"name": name, "scopes": scopes})
        assert st == 201, (st, r)
        return r["token"]

    verify = token("gateway", ["verify"])
    manage = token("ops", ["manage"])
    keys = {k: [] for k in KINDS}
    rng = random.Random(5)
    expiring = []
    for i in range(per_kind):
        st, r = api(host, port, "POST", "/v1/agents", manage, {
            "name": f"timing {i}", "description": "An agent made by the timing benchmark.",
            "skills": ["bench"], "languages": ["en"], "webhook_url": "https://agent.example.com/hook"})
        assert st == 201, (st, r)
        agent = r["agent_id"]

        def key(body):
            st, r = api(host, port, "POST", f"/v1/agents/{agent}/keys", manage, body)
            assert st == 201, (st, r)
            return r["key"]["key_id"], r["api_key"]

        keys["VALID"].append(key({"label": "valid"})[1])
        kid, k = key({"label": "revoked"})
        assert api(host, port, "POST", f"/v1/keys/{kid}/revoke", manage, {"reason": "timing"})[0] == 200
        keys["REVOKED"].append(k)
        kid, k = key({"label": "compromised"})
        assert api(host, port, "POST", f"/v1/keys/{kid}/compromise", manage, {"note": "timing"})[0] == 200
        keys["COMPROMISED"].append(k)
        expiring.append(key({"label": "expiring", "expires_in_seconds": 1})[1])
        keys["NOT_FOUND"].append(hostile.random_unknown_key(keys["VALID"][-1], rng))
        keys["MALFORMED"].append(keys["VALID"][-1][:-1])
    time.sleep(1.2)  # the expiring keys pass their expiry
    keys["EXPIRED"] = expiring
    return verify, keys


def measure(host, port, verify_token, keys, samples):
    requests = {k: [hostile.verify_request(verify_token, key) for key in v] for k, v in keys.items()}
    order = [k for k in KINDS for _ in range(samples)]
    random.Random(7).shuffle(order)
    sock = socket.create_connection((host, port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    reader = hostile.BlockingReader(sock)
    lat = {k: [] for k in KINDS}
    used = {k: 0 for k in KINDS}
    warm = 2000
    for n, kind in enumerate(order[:warm] + order):
        req = requests[kind][used[kind] % len(requests[kind])]
        used[kind] += 1
        t0 = time.perf_counter_ns()
        sock.sendall(req)
        status, _, body = reader.response()
        t1 = time.perf_counter_ns()
        if status != 200 or f'"code":"{kind}"'.encode() not in body.replace(b" ", b""):
            sys.exit(f"a {kind} key answered {status} {body[:200]!r}")
        if n >= warm:
            lat[kind].append((t1 - t0) / 1000.0)
    sock.close()
    return lat


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--keyledger", required=True)
    p.add_argument("--samples", type=int, default=20000, help="requests per answer (default 20000)")
    p.add_argument("--keys", type=int, default=50, help="keys per answer (default 50)")
    p.add_argument("--kafka-brokers", default="embedded")
    p.add_argument("--out")
    p.add_argument("--keep", action="store_true")
    args = p.parse_args()
    args.serve_arg = []
    tmp = tempfile.mkdtemp(prefix="keyledger-timing-")
    proc = None
    try:
        proc, host, port, data, _ = hostile.start_server(args, tmp)
        verify_token, keys = make_keys(host, port, data, args.keys)
        lat = measure(host, port, verify_token, keys, args.samples)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    figures = {}
    for kind in KINDS:
        s = sorted(lat[kind])
        figures[kind] = (hostile.pct(s, 50), hostile.pct(s, 90), hostile.pct(s, 99))
    lines = [f"POST /v1/verify by answer over HTTP: {args.samples} requests per answer interleaved at random, "
             f"one keep-alive connection, {args.keys} keys per answer (us, client-side)",
             f"{'answer':<12} {'p50 us':>8} {'p90 us':>8} {'p99 us':>8} {'p50/VALID':>10} {'p99/VALID':>10}"]
    v50, _, v99 = figures["VALID"]
    for kind in KINDS:
        a, b, c = figures[kind]
        lines.append(f"{kind:<12} {a:8.1f} {b:8.1f} {c:8.1f} {a / v50:10.2f} {c / v99:10.2f}")
    report = "\n".join(lines) + "\n"
    print(report, end="")
    if args.out:
        with open(args.out, "w") as f:
            f.write(report)


if __name__ == "__main__":
    main()
