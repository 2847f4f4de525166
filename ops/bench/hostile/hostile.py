#!/usr/bin/env python3
"""Hostile-client load test of keyledger (driven by ops/bench/hostile/run).

One process plays three parts, chosen by its first argument:

  main    starts keyledger, prepares tokens, agents, keys and audit events, then runs the
          phases: a baseline, then each attack in turn while a well-behaved client measures
          its latency; samples the server's RSS, descriptors and CPU; prints the table.
  good    the well-behaved client: one keep-alive connection, sequential POST /v1/verify
          with valid keys; prints its statistics as JSON.
  attack  one attack (asyncio, raw sockets); prints READY once ramped up, runs until
          SIGTERM, then prints its statistics as JSON.

Standard library only. Every socket goes to the keyledger it started on 127.0.0.1.
"""
import argparse
import asyncio
import concurrent.futures
import http.client
import json
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))

# --------------------------------------------------------------------------- small helpers


def pct(sorted_values, p):
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, int(round(p / 100.0 * (len(sorted_values) - 1)))))
    return sorted_values[k]


class Eof(Exception):
    """The server closed the connection (clean EOF) before a whole response arrived."""


def parse_head(head):
    """(status, {lower-name: value}) of a response head (bytes without the blank line)."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    status = int(parts[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
    return status, headers


class BlockingReader:
    """Reads HTTP/1.1 responses (Content-Length bodies) from a blocking socket."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()

    def _fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("EOF from server")
        self.buf += data

    def response(self):
        while True:
            i = self.buf.find(b"\r\n\r\n")
            if i >= 0:
                break
            self._fill()
        status, headers = parse_head(bytes(self.buf[:i]))
        length = int(headers.get("content-length", "0"))
        start = i + 4
        while len(self.buf) < start + length:
            self._fill()
        body = bytes(self.buf[start:start + length])
        del self.buf[:start + length]
        return status, headers, body


def api(host, port, method, path, token=None, body=None, headers=None, timeout=30):
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    h = dict(headers or {})
    if token:
        h["Authorization"] = "Bearer " + token
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        h["Content-Type"] = "application/json"
    conn.request(method, path, body=data, headers=h)
    r = conn.getresponse()
    raw = r.read()
    conn.close()
    try:
        parsed = json.loads(raw) if raw else None
    except ValueError:
        parsed = raw
    return r.status, parsed


def verify_request(token, api_key):
    body = json.dumps({"api_key": api_key}).encode()
    return (b"POST /v1/verify HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + token.encode() +
            b"\r\nContent-Type: application/json\r\nContent-Length: " + str(len(body)).encode() +
            b"\r\n\r\n" + body)


def auth_request(api_key):
    return b"GET /v1/auth HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + api_key + b"\r\n\r\n"


def random_unknown_key(real_key, rng):
    """A well-formed key that was never issued: a real key with its secret part changed."""
    secret = list(real_key[3:])
    for i in rng.sample(range(32), 6):
        secret[i] = rng.choice([c for c in "0123456789abcdef" if c != secret[i]])
    return "cg_" + "".join(secret)


# Malformed on purpose, built from a counting pattern (never an issued key): each breaks one
# rule of the format (README, Design decisions).
_HEX32 = "0123456789abcdef" * 2
MALFORMED = [
    "", "cg_", "cg", "sk_live_" + _HEX32,
    "cg_" + _HEX32[:-1],  # 31 hex
    "cg_" + _HEX32 + "0",  # 33 hex
    "cg_" + _HEX32.upper(),  # upper case
    "cg_" + _HEX32[:-1] + "g",  # not hex
    "CG_" + _HEX32,
    " cg_" + _HEX32,  # leading space
    "cg_" + _HEX32 + " ",  # trailing space
    "cg_" + "a" * 2000,
    "x" * 4000,
    "cg_\u00e9\u00e9\u00e9\u00e9" + _HEX32[:28],
]

# --------------------------------------------------------------------------- the good client


def good_main(args):
    cfg = json.load(open(args.config))
    host, port = cfg["host"], cfg["port"]
    reqs = [verify_request(cfg["verify_token"], k) for k in cfg["good_keys"]]
    lat = []
    errors = []
    per_second_max = {}
    connects = 0
    sock = None
    reader = None
    start = time.perf_counter()
    deadline = start + args.duration
    i = 0
    while True:
        now = time.perf_counter()
        if now >= deadline:
            break
        if sock is None:
            try:
                sock = socket.create_connection((host, port), timeout=5)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                reader = BlockingReader(sock)
                connects += 1
            except OSError as e:
                errors.append(f"{now - start:.2f}s connect: {e!r}")
                time.sleep(0.1)
                continue
        req = reqs[i % len(reqs)]
        i += 1
        t0 = time.perf_counter_ns()
        try:
            sock.sendall(req)
            status, headers, body = reader.response()
        except (OSError, ConnectionError, ValueError) as e:
            errors.append(f"{time.perf_counter() - start:.2f}s request {i}: {e!r}")
            sock.close()
            sock = None
            continue
        t1 = time.perf_counter_ns()
        us = (t1 - t0) / 1000.0
        lat.append(us)
        sec = int((t0 / 1e9) - start)
        if us > per_second_max.get(sec, 0):
            per_second_max[sec] = us
        if status != 200 or b'"VALID"' not in body:
            errors.append(f"{time.perf_counter() - start:.2f}s request {i}: {status} {body[:120]!r}")
        if headers.get("connection", "").lower() == "close":
            errors.append(f"{time.perf_counter() - start:.2f}s request {i}: server sent Connection: close")
            sock.close()
            sock = None
    elapsed = time.perf_counter() - start
    if sock is not None:
        sock.close()
    s = sorted(lat)
    out = {
        "count": len(lat), "seconds": elapsed, "rps": len(lat) / elapsed if elapsed else 0,
        "p50": pct(s, 50), "p90": pct(s, 90), "p99": pct(s, 99), "p999": pct(s, 99.9),
        "max": s[-1] if s else float("nan"), "errors": len(errors), "error_samples": errors[:10],
        "connects": connects,
        "per_second_max_ms": [round(per_second_max.get(k, 0) / 1000.0, 2) for k in range(int(elapsed) + 1)],
    }
    print(json.dumps(out))


# --------------------------------------------------------------------------- the attacks


class Attack:
    def __init__(self, cfg):
        self.cfg = cfg
        self.host, self.port = cfg["host"], cfg["port"]
        self.loop = asyncio.get_running_loop()
        self.stop = asyncio.Event()
        self.ready = asyncio.Event()
        self.stats = {}
        self.t0 = time.monotonic()

    def count(self, *names, by=1):
        d = self.stats
        for n in names[:-1]:
            d = d.setdefault(n, {})
        d[names[-1]] = d.get(names[-1], 0) + by

    async def connect(self, rcvbuf=None, sndbuf=None):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        if rcvbuf:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if sndbuf:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        try:
            await asyncio.wait_for(self.loop.sock_connect(s, (self.host, self.port)), 10)
        except (OSError, asyncio.TimeoutError) as e:
            s.close()
            self.count("connect_errors", type(e).__name__ + ("" if not getattr(e, "errno", None) else f"({e.errno})"))
            return None
        return s

    @staticmethod
    def rst_close(s):
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        s.close()

    async def read_response(self, s, buf, timeout=5.0):
        """Reads one response from s (buf: bytearray of bytes already read). Returns
        (status, headers) or raises Eof, OSError or asyncio.TimeoutError."""
        async def go():
            while True:
                i = buf.find(b"\r\n\r\n")
                if i >= 0:
                    break
                data = await self.loop.sock_recv(s, 65536)
                if not data:
                    raise Eof("eof" if not buf else "eof_mid_response")
                buf.extend(data)
            status, headers = parse_head(bytes(buf[:i]))
            need = i + 4 + int(headers.get("content-length", "0"))
            while len(buf) < need:
                data = await self.loop.sock_recv(s, 65536)
                if not data:
                    raise Eof("eof_mid_body")
                buf.extend(data)
            del buf[:need]
            return status, headers
        return await asyncio.wait_for(go(), timeout)

    async def watch_close(self, s):
        """Waits until the server closes s; returns (how, bytes received)."""
        got = bytearray()
        try:
            while True:
                data = await self.loop.sock_recv(s, 4096)
                if not data:
                    return "eof", bytes(got)
                got += data
        except OSError as e:
            return type(e).__name__, bytes(got)

    async def run(self, name):
        await getattr(self, "attack_" + name)()

    # a. slowloris --------------------------------------------------------
    async def attack_slowloris(self):
        n, interval = 500, 2.0
        payload = (b"POST /v1/verify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                   b"X-Slow: " + b"a" * 200)
        opened = [0]
        closes = []  # (seconds after open, how, first bytes)

        async def one(i):
            await asyncio.sleep(i * interval / n)
            s = await self.connect()
            if s is None:
                return
            t_open = time.monotonic()
            opened[0] += 1
            if opened[0] >= n:
                self.ready.set()
            watcher = asyncio.ensure_future(self.watch_close(s))
            pos = 0
            try:
                while not self.stop.is_set() and not watcher.done():
                    try:
                        await self.loop.sock_sendall(s, payload[pos:pos + 1])
                        pos += 1
                        self.count("bytes_sent")
                    except OSError as e:
                        self.count("send_errors", type(e).__name__)
                        break
                    await asyncio.wait([watcher], timeout=interval)
                if watcher.done():
                    how, got = watcher.result()
                    closes.append((time.monotonic() - t_open, how, got[:60].decode("latin-1")))
            finally:
                watcher.cancel()
                s.close()

        tasks = [asyncio.ensure_future(one(i)) for i in range(n)]
        try:
            await asyncio.wait_for(self.ready.wait(), 20)
        except asyncio.TimeoutError:
            pass
        self.stats["opened"] = opened[0]
        print("READY", flush=True)
        await self.stop.wait()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.stats["opened"] = opened[0]
        self.stats["closed_by_server"] = len(closes)
        if closes:
            ts = sorted(c[0] for c in closes)
            self.stats["closed_after_s"] = {"min": round(ts[0], 2), "median": round(pct(ts, 50), 2),
                                            "max": round(ts[-1], 2)}
            kinds = {}
            for _, how, got in closes:
                key = how + (": " + got.split("\r\n")[0] if got else ": nothing sent")
                kinds[key] = kinds.get(key, 0) + 1
            self.stats["close_kinds"] = kinds

    # b. header flood -----------------------------------------------------
    async def attack_headers(self):
        variants = [
            ("header_9KiB", b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Fill: " + b"a" * 9000 + b"\r\n\r\n"),
            ("700_headers_64KiB", b"GET /healthz HTTP/1.1\r\nHost: x\r\n" +
             b"".join(b"X-F%d: %s\r\n" % (i, b"b" * 85) for i in range(700)) + b"\r\n"),
            ("request_line_16KiB", b"GET /healthz?" + b"a" * 16000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"),
            ("path_64KiB", b"GET /v1/keys/" + b"k" * 65536 + b" HTTP/1.1\r\nHost: x\r\n\r\n"),
            ("header_1MiB_unterminated", b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Fill: " + b"c" * (1 << 20)),
        ]
        workers = 32

        async def worker(w):
            k = w
            while not self.stop.is_set():
                name, req = variants[k % len(variants)]
                k += 1
                s = await self.connect()
                if s is None:
                    await asyncio.sleep(0.05)
                    continue
                buf = bytearray()
                t = time.monotonic()
                try:
                    await asyncio.wait_for(self.loop.sock_sendall(s, req), 5)
                except asyncio.TimeoutError:
                    self.count(name, "send_stalled_5s")
                except OSError as e:
                    self.count(name, "send_" + type(e).__name__)
                try:
                    status, headers = await self.read_response(s, buf)
                    self.count(name, str(status))
                    if headers.get("connection", "").lower() == "close":
                        self.count(name, "connection_close_header")
                    ms = (time.monotonic() - t) * 1000
                    if ms > self.stats.get(name, {}).get("max_answer_ms", 0):
                        self.stats[name]["max_answer_ms"] = round(ms, 1)
                except asyncio.TimeoutError:
                    self.count(name, "no_answer_5s")
                except Eof as e:
                    self.count(name, "read_" + str(e))
                except (OSError, ValueError) as e:
                    self.count(name, "read_" + type(e).__name__)
                self.rst_close(s)
                self.count("attempts")

        tasks = [asyncio.ensure_future(worker(w)) for w in range(workers)]
        print("READY", flush=True)
        await self.stop.wait()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.stats["rate_per_s"] = round(self.stats.get("attempts", 0) / (time.monotonic() - self.t0), 1)

    # c. pipelining abuse -------------------------------------------------
    async def attack_pipeline(self):
        cfg = self.cfg
        batch = 300
        kinds = {
            "verify": verify_request(cfg["verify_token"], cfg["attack_keys"][0]),
            "auth": auth_request(cfg["attack_keys"][1].encode()),
            "metrics": b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
            "audit_100": (b"GET /v1/audit?limit=100 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
                          cfg["audit_token"].encode() + b"\r\n\r\n"),
        }
        names = list(kinds)
        workers = 16
        stall_ms = []

        async def worker(w):
            name = names[w % len(names)]
            data = kinds[name] * batch
            while not self.stop.is_set():
                s = await self.connect(rcvbuf=4096)
                if s is None:
                    await asyncio.sleep(0.05)
                    continue
                self.count(name, "connections")
                t = time.monotonic()
                sent_batches = 0
                try:
                    while not self.stop.is_set():
                        await asyncio.wait_for(self.loop.sock_sendall(s, data), 2)
                        sent_batches += 1
                        self.count(name, "requests_sent", by=batch)
                except asyncio.TimeoutError:
                    # the server stopped reading: back-pressure works
                    self.count(name, "stalled")
                    stall_ms.append((time.monotonic() - t - 2) * 1000)
                    self.count(name, "batches_before_stall", by=sent_batches)
                except OSError as e:
                    self.count(name, "send_" + type(e).__name__)
                self.rst_close(s)

        tasks = [asyncio.ensure_future(worker(w)) for w in range(workers)]
        print("READY", flush=True)
        await self.stop.wait()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if stall_ms:
            s = sorted(stall_ms)
            self.stats["time_to_stall_ms"] = {"median": round(pct(s, 50)), "max": round(s[-1])}

    # d. clients that vanish mid-response ---------------------------------
    async def attack_vanish(self):
        cfg = self.cfg
        audit = (b"GET /v1/audit?limit=1000 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
                 cfg["audit_token"].encode() + b"\r\n\r\n")
        metrics = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
        modes = ["rst_at_once", "fin_at_once", "rst_after_first_bytes", "half_close_no_read"]
        workers = 16

        async def worker(w):
            k = w
            while not self.stop.is_set():
                mode = modes[k % len(modes)]
                what, req = (("audit", audit) if (k // len(modes)) % 4 != 3 else ("metrics", metrics))
                k += 1
                s = await self.connect(rcvbuf=4096)
                if s is None:
                    await asyncio.sleep(0.05)
                    continue
                try:
                    await self.loop.sock_sendall(s, req)
                    if mode == "rst_after_first_bytes":
                        got = await asyncio.wait_for(self.loop.sock_recv(s, 1024), 5)
                        if got.startswith(b"HTTP/1.1 200"):
                            self.count("first_bytes_200")
                        elif got:
                            self.count("first_bytes_" + got[:12].decode("latin-1"))
                    elif mode == "half_close_no_read":
                        s.shutdown(socket.SHUT_WR)
                        await asyncio.sleep(0.2)
                except (OSError, asyncio.TimeoutError) as e:
                    self.count("errors", type(e).__name__)
                if mode == "fin_at_once":
                    s.close()
                else:
                    self.rst_close(s)
                self.count(what + "/" + mode)
                self.count("attempts")

        tasks = [asyncio.ensure_future(worker(w)) for w in range(workers)]
        print("READY", flush=True)
        await self.stop.wait()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.stats["rate_per_s"] = round(self.stats.get("attempts", 0) / (time.monotonic() - self.t0), 1)

    # e. idle connections -------------------------------------------------
    async def attack_idle(self):
        n = 2000
        sem = asyncio.Semaphore(256)
        opened = [0]
        closes = []

        async def one(i):
            async with sem:
                s = await self.connect()
            if s is None:
                return
            t_open = time.monotonic()
            opened[0] += 1
            if opened[0] >= n:
                self.ready.set()
            try:
                how, got = await self.watch_close(s)
                closes.append((time.monotonic() - t_open, time.monotonic() - self.t_ready, how,
                               got[:60].decode("latin-1")))
            finally:
                s.close()

        self.t_ready = time.monotonic()
        tasks = [asyncio.ensure_future(one(i)) for i in range(n)]
        try:
            await asyncio.wait_for(self.ready.wait(), 20)
        except asyncio.TimeoutError:
            pass
        self.stats["opened"] = opened[0]
        self.stats["ramp_s"] = round(time.monotonic() - self.t0, 2)
        self.t_ready = time.monotonic()
        print("READY", flush=True)
        await self.stop.wait()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.stats["opened"] = opened[0]
        self.stats["closed_by_server"] = len(closes)
        if closes:
            ts = sorted(c[0] for c in closes)
            self.stats["closed_after_open_s"] = {"min": round(ts[0], 2), "median": round(pct(ts, 50), 2),
                                                 "max": round(ts[-1], 2)}
            hist = {}
            for c in closes:
                b = f"{int(c[0])}-{int(c[0]) + 1}s"
                hist[b] = hist.get(b, 0) + 1
            self.stats["closed_histogram"] = hist
            kinds = {}
            for _, _, how, got in closes:
                key = how + (": " + got.split("\r\n")[0] if got else ": nothing sent")
                kinds[key] = kinds.get(key, 0) + 1
            self.stats["close_kinds"] = kinds

    # f. malformed and unknown keys ---------------------------------------
    async def attack_badkeys(self):
        cfg = self.cfg
        rng = random.Random(7)
        real = cfg["attack_keys"][0]
        vtok = cfg["verify_token"]

        def make():
            cls = rng.random()
            key = random_unknown_key(real, rng) if cls < 0.5 else rng.choice(MALFORMED)
            kind = "unknown" if cls < 0.5 else "malformed"
            if rng.random() < 0.5:
                return "verify/" + kind, verify_request(vtok, key)
            hk = key.encode("utf-8")
            return "auth/" + kind, auth_request(hk)

        pool = [make() for _ in range(4000)]
        await self._flood(pool, workers=64, parse_code=True)

    # g. failed authentications (401) -------------------------------------
    async def attack_authfail(self):
        cfg = self.cfg
        rng = random.Random(11)
        real = cfg["attack_keys"][0]

        def make():
            r = rng.randrange(4)
            if r == 0:
                return "self/unknown_key", (b"GET /v1/self HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
                                            random_unknown_key(real, rng).encode() + b"\r\n\r\n")
            if r == 1:
                bad = "kls_" + "".join(rng.choice("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")
                                       for _ in range(43))
                return "verify/bad_token", verify_request(bad, real)
            if r == 2:
                return "tokens/garbage", b"GET /v1/tokens HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer garbage\r\n\r\n"
            return "audit/none", b"GET /v1/audit HTTP/1.1\r\nHost: x\r\n\r\n"

        pool = [make() for _ in range(4000)]
        await self._flood(pool, workers=64, parse_code=False)

    async def _flood(self, pool, workers, parse_code):
        async def worker(w):
            rng = random.Random(w)
            s = None
            buf = bytearray()
            while not self.stop.is_set():
                if s is None:
                    s = await self.connect()
                    buf = bytearray()
                    if s is None:
                        await asyncio.sleep(0.05)
                        continue
                    self.count("connections")
                name, req = pool[rng.randrange(len(pool))]
                try:
                    await self.loop.sock_sendall(s, req)
                    status, headers = await self.read_response(s, buf, timeout=10)
                except Eof as e:
                    self.count(name, "error_" + str(e))
                    s.close()
                    s = None
                    continue
                except (OSError, asyncio.TimeoutError, ValueError) as e:
                    self.count(name, "error_" + type(e).__name__)
                    s.close()
                    s = None
                    continue
                self.count(name, str(status))
                if status == 429:
                    self.count(name, "429_retry_after=" + headers.get("retry-after", "-"))
                if headers.get("connection", "").lower() == "close":
                    self.count(name, "closed_by_server")
                    s.close()
                    s = None
                self.count("requests")

        tasks = [asyncio.ensure_future(worker(w)) for w in range(workers)]
        print("READY", flush=True)
        await self.stop.wait()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.stats["rate_per_s"] = round(self.stats.get("requests", 0) / (time.monotonic() - self.t0), 1)


def attack_main(args):
    cfg = json.load(open(args.config))

    async def go():
        a = Attack(cfg)
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, a.stop.set)
        loop.call_later(args.max_seconds, a.stop.set)  # never outlives its phase by much
        try:
            await a.run(args.name)
        except Exception as e:  # report, do not hide
            a.stats["attacker_exception"] = repr(e)
            print("READY", flush=True)
        a.stats["attack_seconds"] = round(time.monotonic() - a.t0, 1)
        print(json.dumps(a.stats), flush=True)

    asyncio.run(go())


# --------------------------------------------------------------------------- main


class Sampler(threading.Thread):
    """Samples the server's /proc status every 0.1 s and probes GET /healthz (new connection)
    every second."""

    def __init__(self, pid, host, port):
        super().__init__(daemon=True)
        self.pid, self.host, self.port = pid, host, port
        self.halt = threading.Event()
        self.rss_max = 0
        self.hwm = 0
        self.fds_max = 0
        self.health_ok = 0
        self.health_fail = []
        self.health_max_ms = 0.0

    def run(self):
        next_probe = time.monotonic()
        while not self.halt.is_set():
            st = proc_status(self.pid)
            if st:
                self.rss_max = max(self.rss_max, st.get("VmRSS", 0))
                self.hwm = max(self.hwm, st.get("VmHWM", 0))
            self.fds_max = max(self.fds_max, count_fds(self.pid))
            if time.monotonic() >= next_probe:
                next_probe += 1.0
                ok, ms, what = healthz(self.host, self.port)
                if ok:
                    self.health_ok += 1
                else:
                    self.health_fail.append(what)
                self.health_max_ms = max(self.health_max_ms, ms)
            self.halt.wait(0.1)


def proc_status(pid):
    try:
        out = {}
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS", "VmHWM", "Threads")):
                    k, v = line.split(":", 1)
                    out[k] = int(v.split()[0])
        return out
    except OSError:
        return None


def count_fds(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def cpu_seconds(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return 0.0


def healthz(host, port, timeout=2.0):
    t = time.perf_counter()
    try:
        s = socket.create_connection((host, port), timeout=timeout)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        status, _, _ = BlockingReader(s).response()
        s.close()
        ms = (time.perf_counter() - t) * 1000
        return status == 200, ms, f"status {status}"
    except Exception as e:  # noqa: BLE001 — any failure is a failed probe
        return False, (time.perf_counter() - t) * 1000, repr(e)


PHASES = [
    ("a", "slowloris", "500 conns, 1 header byte / 2 s"),
    ("b", "headers", "oversized header blocks / request lines"),
    ("c", "pipeline", "300 pipelined requests/conn, never read"),
    ("d", "vanish", "audit?limit=1000 & /metrics, close/RST at once"),
    ("e", "idle", "2000 idle connections"),
    ("f", "badkeys", "malformed + unknown keys, verify & auth"),
    ("g", "authfail", "401 flood: /v1/self, bad service token"),
]


def log(msg):
    print(f"[hostile {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def start_server(args, tmp):
    data = os.path.join(tmp, "data")
    out = open(os.path.join(tmp, "keyledger.out"), "w")
    err_path = os.path.join(tmp, "keyledger.err")
    err = open(err_path, "w")
    cmd = [args.keyledger, "serve", "--data-dir", data, "--listen", "127.0.0.1:0",
           "--kafka-brokers", args.kafka_brokers, "--disable-webhooks",
           # the good client and the pipelining attacker must not run into their keys' buckets
           "--rate-limit-tiers", "standard:1000000:1000000,elevated:1000000:1000000"] + args.serve_arg
    proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    addr = None
    while time.monotonic() < deadline and addr is None:
        if proc.poll() is not None:
            sys.exit(f"keyledger exited at start with {proc.returncode}; see {err_path}:\n" + open(err_path).read()[-2000:])
        for line in open(os.path.join(tmp, "keyledger.out")):
            if line.startswith("keyledger listening on "):
                addr = line.split()[-1]
        time.sleep(0.05)
    if addr is None:
        proc.kill()
        sys.exit("keyledger did not start")
    host, port = addr.rsplit(":", 1)
    port = int(port)
    while time.monotonic() < deadline:
        try:
            if api(host, port, "GET", "/readyz")[0] == 200:
                break
        except OSError:
            pass
        time.sleep(0.05)
    return proc, host, port, data, err_path


def prepare(host, port, data, events):
    admin = open(os.path.join(data, "bootstrap-token")).read().strip()

    def token(name, scopes):
        st, r = api(host, port, "POST", "/v1/tokens", admin, {"name": name, "scopes": scopes})
        assert st == 201, (st, r)
        return r["token"]

    verify = token("gateway", ["verify"])
    audit = token("dashboard", ["manage", "audit"])

    def agent(name):
        st, r = api(host, port, "POST", "/v1/agents", audit, {
            "name": name, "description": "An agent made by the hostile-client benchmark.",
            "skills": ["bench"], "languages": ["en"], "webhook_url": "https://agent.example.com/hook"})
        assert st == 201, (st, r)
        return r["agent_id"]

    def key(agent_id):
        st, r = api(host, port, "POST", f"/v1/agents/{agent_id}/keys", audit, {"label": "bench"})
        assert st == 201, (st, r)
        return r["api_key"]

    good_agent = agent("good client")
    good_keys = [key(good_agent) for _ in range(4)]
    attack_agent = agent("attacker")
    attack_keys = [key(attack_agent) for _ in range(2)]
    # Audit history for the large responses of attack d: agents with 9 keys each.
    n_agents = max(1, events // 10)

    def fill(i):
        a = agent(f"filler {i}")
        for _ in range(9):
            key(a)

    with concurrent.futures.ThreadPoolExecutor(32) as ex:
        list(ex.map(fill, range(n_agents)))
    st, r = api(host, port, "GET", "/v1/audit?limit=1000", audit)
    assert st == 200, st
    return {"host": host, "port": port, "verify_token": verify, "audit_token": audit,
            "good_keys": good_keys, "attack_keys": attack_keys, "audit_events": len(r["events"])}


def fmt_ratio(v, base):
    if not base or v != v or base != base:
        return "-"
    return f"{v / base:.2f}"


def main(args):
    tmp = tempfile.mkdtemp(prefix="keyledger-hostile-")
    proc, host, port, data, err_path = start_server(args, tmp)
    pid = proc.pid
    log(f"keyledger pid {pid} on {host}:{port}, data {data}; fd limit {os.sysconf('SC_OPEN_MAX')}")
    t_setup = time.monotonic()
    cfg = prepare(host, port, data, args.audit_events)
    cfg_path = os.path.join(tmp, "cfg.json")
    json.dump(cfg, open(cfg_path, "w"))
    st = proc_status(pid)
    log(f"prepared in {time.monotonic() - t_setup:.1f}s: {cfg['audit_events']} events on the audit page; "
        f"RSS {st['VmRSS'] / 1024:.1f} MiB")
    rss_start = st["VmRSS"]

    only = set(args.only.split(",")) if args.only else None
    plan = [("base", None, "no attack (baseline)", args.baseline_seconds)]
    for letter, name, desc in PHASES:
        if only and letter not in only and name not in only:
            continue
        secs = args.seconds if name != "idle" else max(args.seconds, 13)
        plan.append((letter, name, desc, secs))
    plan.append(("after", None, "no attack, after all phases", args.after_seconds))

    rows = []
    died = False
    good_errors = 0
    for letter, name, desc, secs in plan:
        if proc.poll() is not None:
            died = True
            break
        log(f"phase {letter}: {desc}, {secs}s")
        fds_before = count_fds(pid)
        log_before = os.path.getsize(err_path)
        cpu_before = cpu_seconds(pid)
        sampler = Sampler(pid, host, port)
        sampler.start()
        t_phase = time.monotonic()
        att = None
        att_stats = {}
        if name:
            att_err = open(os.path.join(tmp, f"attack-{name}.err"), "w")
            att = subprocess.Popen([sys.executable, __file__, "attack", name, "--config", cfg_path,
                                    "--max-seconds", str(secs + 60)],
                                   stdout=subprocess.PIPE, stderr=att_err, text=True)
            line = att.stdout.readline()
            if line.strip() != "READY":
                log(f"attack {name} did not get ready: {line!r}")
        t_good = time.monotonic()
        g = subprocess.run([sys.executable, __file__, "good", "--config", cfg_path, "--duration", str(secs)],
                           capture_output=True, text=True)
        try:
            good = json.loads(g.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            good = {"count": 0, "rps": 0, "p50": float("nan"), "p99": float("nan"), "max": float("nan"),
                    "errors": 1, "error_samples": [g.stderr[-500:]]}
        if name == "slowloris" and args.slowloris_observe > 0:
            # keep the slow connections (no good client) past the 30 s request limit
            until = t_good + args.slowloris_observe
            while time.monotonic() < until and proc.poll() is None:
                time.sleep(0.2)
        if att is not None:
            att.send_signal(signal.SIGTERM)
            try:
                out, _ = att.communicate(timeout=30)
                att_stats = json.loads(out.strip().splitlines()[-1])
            except (subprocess.TimeoutExpired, ValueError, IndexError) as e:
                att.kill()
                att_stats = {"attacker_failed": repr(e)}
        phase_seconds = time.monotonic() - t_phase
        time.sleep(1.0)  # let the server drop what the attack left
        sampler.halt.set()
        sampler.join()
        alive = proc.poll() is None
        st = proc_status(pid) or {}
        row = {
            "phase": letter, "name": name or letter, "desc": desc, "good": good, "attack": att_stats,
            "alive": alive, "health_ok": sampler.health_ok, "health_fail": sampler.health_fail,
            "health_max_ms": sampler.health_max_ms,
            "rss_max_kib": sampler.rss_max, "hwm_kib": max(sampler.hwm, st.get("VmHWM", 0)),
            "rss_after_kib": st.get("VmRSS", 0), "threads": st.get("Threads", 0),
            "fds_before": fds_before, "fds_max": sampler.fds_max, "fds_after": count_fds(pid),
            "cpu_pct": 100.0 * (cpu_seconds(pid) - cpu_before) / phase_seconds if alive else float("nan"),
            "log_bytes": os.path.getsize(err_path) - log_before,
        }
        rows.append(row)
        good_errors += good.get("errors", 0)
        log(f"phase {letter}: good p50 {good['p50']:.0f}us p99 {good['p99']:.0f}us max {good['max'] / 1000:.1f}ms "
            f"{good['rps']:.0f} req/s, errors {good['errors']}; server {'up' if alive else 'DEAD'}, "
            f"RSS max {sampler.rss_max / 1024:.1f} MiB; attack {json.dumps(att_stats)[:600]}")
        if not alive:
            died = True
            break

    # ---- report
    base = rows[0]["good"] if rows else {}
    print()
    print(f"keyledger hostile-client run: {args.keyledger}, --kafka-brokers {args.kafka_brokers}, "
          f"{os.cpu_count()} CPUs (clients, attackers and server share them), fd limit {os.sysconf('SC_OPEN_MAX')}")
    print(f"good client: 1 keep-alive connection, sequential POST /v1/verify, 4 valid keys; "
          f"RSS after setup {rss_start / 1024:.1f} MiB")
    print()
    hdr = (f"{'phase':<13}{'req/s':>7}{'x':>6}{'p50us':>7}{'x':>6}{'p99us':>7}{'x':>6}{'max ms':>8}"
           f"{'err':>5}{'up':>4}{'healthz':>9}{'RSSmax':>8}{'HWM':>7}{'fds b/max/a':>15}{'cpu%':>6}{'log B':>8}")
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        g = r["good"]
        hz = f"{r['health_ok']}/{r['health_ok'] + len(r['health_fail'])}"
        print(f"{(r['phase'] + ' ' + r['name'])[:13]:<13}{g['rps']:>7.0f}{fmt_ratio(g['rps'], base.get('rps')):>6}"
              f"{g['p50']:>7.0f}{fmt_ratio(g['p50'], base.get('p50')):>6}"
              f"{g['p99']:>7.0f}{fmt_ratio(g['p99'], base.get('p99')):>6}{g['max'] / 1000:>8.1f}"
              f"{g['errors']:>5}{'yes' if r['alive'] else 'NO':>4}{hz:>9}"
              f"{r['rss_max_kib'] / 1024:>8.1f}{r['hwm_kib'] / 1024:>7.1f}"
              f"{str(r['fds_before']) + '/' + str(r['fds_max']) + '/' + str(r['fds_after']):>15}"
              f"{r['cpu_pct']:>6.0f}{r['log_bytes']:>8}")
    print()
    print("x = ratio to the baseline in this run; RSSmax = highest VmRSS sampled (MiB, every 0.1 s); "
          "HWM = VmHWM (peak since start);")
    print("fds = server descriptors before the phase / highest / 1 s after it; cpu% = server CPU over the phase "
          "(200 = both cores); log B = bytes the server logged.")
    print()
    print("attack details:")
    for r in rows:
        if r["attack"]:
            print(f"  {r['phase']} {r['name']} ({r['desc']}): {json.dumps(r['attack'], sort_keys=True)}")
        if r["health_fail"]:
            print(f"    healthz failures: {r['health_fail'][:5]}")
        if r["health_max_ms"] > 100:
            print(f"    slowest healthz probe {r['health_max_ms']:.0f} ms")
        g = r["good"]
        if g.get("error_samples"):
            print(f"    good-client errors: {g['error_samples']}")
        if g.get("max", 0) > 50_000 and g.get("per_second_max_ms"):
            print(f"    good-client slowest answer per second (ms): {g['per_second_max_ms']}")
    peak = max((r["hwm_kib"] for r in rows), default=0)
    print()
    print(f"server peak RSS (VmHWM) over the run: {peak / 1024:.1f} MiB; "
          f"server {'stayed up' if not died else 'DIED'}; good-client errors: {good_errors}")
    if args.json_out:
        json.dump({"rows": rows, "rss_start_kib": rss_start}, open(args.json_out, "w"), indent=1)

    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    else:
        print(f"keyledger exited with {proc.returncode}; last log lines:\n" + open(err_path).read()[-3000:])
    if args.keep:
        print(f"kept {tmp}")
    else:
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if died or good_errors else 0


def cli():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("main")
    m.add_argument("--keyledger", required=True)
    m.add_argument("--kafka-brokers", default="embedded")
    m.add_argument("--seconds", type=float, default=10, help="good-client seconds per attack phase")
    m.add_argument("--baseline-seconds", type=float, default=10)
    m.add_argument("--after-seconds", type=float, default=5)
    m.add_argument("--slowloris-observe", type=float, default=34,
                   help="seconds to keep the slowloris connections (past the 30 s request limit); 0: no longer")
    m.add_argument("--audit-events", type=int, default=1000)
    m.add_argument("--only", default="", help="comma-separated phase letters or names")
    m.add_argument("--serve-arg", action="append", default=[], help="extra argument for keyledger serve")
    m.add_argument("--json-out", default="")
    m.add_argument("--keep", action="store_true", help="keep the temporary directory (data, logs)")
    g = sub.add_parser("good")
    g.add_argument("--config", required=True)
    g.add_argument("--duration", type=float, required=True)
    a = sub.add_parser("attack")
    a.add_argument("name")
    a.add_argument("--config", required=True)
    a.add_argument("--max-seconds", type=float, default=120)
    args = p.parse_args()
    if args.cmd == "main":
        sys.exit(main(args))
    elif args.cmd == "good":
        good_main(args)
    else:
        attack_main(args)


if __name__ == "__main__":
    cli()
