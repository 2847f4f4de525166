#!/usr/bin/env python3
"""Fills a running keyledger with agents and keys for ops/bench/verify/run, over its HTTP API.

    make_keys.py BASE_URL BOOTSTRAP_TOKEN_FILE OUT_DIR [--agents 1000] [--keys-per-agent 10]
                 [--connections 16]

Creates a `manage` and a `verify` service token with the bootstrap token, registers the agents
and creates their keys (10 per agent is the API's limit of active keys) from several keep-alive
connections at once, so the server's group commit batches the fsyncs. Writes OUT_DIR/keys (one
`cg_…` key a line) and OUT_DIR/verify-token. Exits non-zero on any unexpected answer.
"""
import argparse
import http.client
import json
import sys
import threading
import time
from urllib.parse import urlsplit


class Client:
    def __init__(self, base, token):
        parts = urlsplit(base)
        self.host, self.port = parts.hostname, parts.port
        self.token = token
        self.conn = None

    def call(self, method, path, body, want):
        data = json.dumps(body).encode()
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
        for attempt in range(3):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
            try:
                self.conn.request(method, path, body=data, headers=headers)
                res = self.conn.getresponse()
                payload = res.read()
            except (ConnectionError, http.client.HTTPException):
                # The server closed an idle keep-alive connection: reconnect. Only creations
                # that never reached it are retried, so no duplicate can appear.
                self.conn.close()
                self.conn = None
                if attempt == 2:
                    raise
                continue
            if res.status != want:
                raise RuntimeError(f"{method} {path}: HTTP {res.status}: {payload[:300]!r}")
            return json.loads(payload)
        raise RuntimeError("unreachable")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("base")
    parser.add_argument("bootstrap_file")
    parser.add_argument("out_dir")
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--keys-per-agent", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()

    bootstrap = open(args.bootstrap_file).read().strip()
    admin = Client(args.base, bootstrap)
    manage = admin.call("POST", "/v1/tokens", {"name": "bench-manage", "scopes": ["manage"]}, 201)["token"]
    verify = admin.call("POST", "/v1/tokens", {"name": "bench-verify", "scopes": ["verify"]}, 201)["token"]

    keys = [[] for _ in range(args.agents)]
    errors = []
    started = time.monotonic()

    def worker(first):
        client = Client(args.base, manage)
        try:
            for a in range(first, args.agents, args.connections):
                agent = client.call("POST", "/v1/agents", {
                    "name": f"bench-agent-{a}",
                    "description": "An agent created by the verification benchmark.",
                    "skills": ["benchmarking"], "languages": ["en"],
                    "webhook_url": "https://agent.example.com/hooks/bench",
                }, 201)["agent_id"]
                for k in range(args.keys_per_agent):
                    created = client.call("POST", f"/v1/agents/{agent}/keys", {"label": f"bench-{k}"}, 201)
                    keys[a].append(created["api_key"])
        except Exception as e:  # reported below; the other workers finish their share
            errors.append(str(e))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(args.connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        print(f"make_keys: {errors[0]}", file=sys.stderr)
        return 1

    flat = [k for per_agent in keys for k in per_agent]
    with open(f"{args.out_dir}/keys", "w") as f:
        f.write("\n".join(flat) + "\n")
    with open(f"{args.out_dir}/verify-token", "w") as f:
        f.write(verify + "\n")
    took = time.monotonic() - started
    print(f"make_keys: {args.agents} agents, {len(flat)} keys in {took:.1f} s "
          f"({(args.agents + len(flat)) / took:.0f} commands/s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
