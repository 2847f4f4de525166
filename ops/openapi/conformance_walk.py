#!/usr/bin/env python3
"""The scripted walk of ops/openapi/conformance: every route of api/openapi.yaml, through
Stoplight Prism validating proxies in front of a real `keyledger serve`.

  strict   prism proxy --errors: requests valid per the document; any response that breaks
           the document (status, headers, body) is a failure (Prism answers 500 VIOLATIONS,
           and undocumented non-2xx statuses, which Prism only warns about, fail here too).
  lenient  prism proxy without --errors: requests that break the document on purpose (bad
           fields, missing credentials, wrong media type) reach the server; its answer must
           still match the document, and Prism must have seen the request violation (the
           document describes the rule the server enforced).
  direct   straight to the server, for what Prism cannot carry (malformed JSON, a body over
           64 KiB, non-canonical paths); the error envelope is checked here.

Unknown routes and methods: Prism routes by the document, so the server's own 404/405 are
requested through the lenient proxy (forwarded unvalidated: checked here, with `Allow` equal
to the document's methods for the path) and through the strict one (Prism's own 404/405 prove
the document has no such route or method either).

Environment: KL_URL, STRICT_URL, LENIENT_URL, KL_DATA_DIR, OPENAPI_DOC, GITHUB_DIR (keys made
by the wrapper, may be empty), ALLOW_OLDER_BINARY (1: a route the binary answers 404
`not_found` for, and a served /openapi.json that differs from OPENAPI_DOC, are skipped with a
notice instead of failing). Exit status 0 only if every step passed.
"""
import base64
import hashlib
import http.client
import json
import os
import re
import subprocess
import sys
import urllib.parse
import uuid

import yaml

KL = os.environ["KL_URL"]
VIA = {"strict": os.environ["STRICT_URL"], "lenient": os.environ["LENIENT_URL"], "direct": KL}
DATA_DIR = os.environ["KL_DATA_DIR"]
DOC_PATH = os.environ["OPENAPI_DOC"]
GITHUB_DIR = os.environ.get("GITHUB_DIR", "")
ALLOW_OLDER = os.environ.get("ALLOW_OLDER_BINARY") == "1"
VERBOSE = os.environ.get("VERBOSE") == "1"

with open(DOC_PATH, encoding="utf-8") as f:
    DOC = yaml.safe_load(f)
METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
OPERATIONS = {(m.upper(), p) for p, item in DOC["paths"].items() for m in item if m in METHODS}


def template_regex(template):
    return re.compile("^" + re.sub(r"\\\{[^}]*\\\}", "[^/]+", re.escape(template)) + "$")


# Literal paths before templated ones, as both Prism and the server route.
TEMPLATES = sorted(DOC["paths"], key=lambda p: (p.count("{"), p))
TEMPLATE_RES = [(t, template_regex(t)) for t in TEMPLATES]


def template_of(path):
    path = path.split("?", 1)[0]
    for t, rx in TEMPLATE_RES:
        if rx.match(path):
            return t
    return None


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers  # lower-case names
        self.body = body
        try:
            self.json = json.loads(body) if body else None
        except ValueError:
            self.json = None

    def header(self, name):
        return self.headers.get(name.lower())

    @property
    def code(self):
        if isinstance(self.json, dict) and isinstance(self.json.get("error"), dict):
            return self.json["error"].get("code")
        return None


def results_of(res):
    """The `result` of each item of a leak report's answer."""
    if not isinstance(res.json, list):
        return []
    return [x.get("result") if isinstance(x, dict) else None for x in res.json]


def violations_of(res):
    """(response violations, request violations) from Prism's sl-violations header."""
    raw = res.header("sl-violations") or "[]"
    try:
        violations = json.loads(raw)
    except ValueError:
        # "Too many violations! <cut JSON>": only which sides broke the document is certain
        return ([raw] if '"location":["response"' in raw else []), ([raw] if '"location":["request"' in raw else [])
    first = lambda v: str((v.get("location") or [""])[0])
    return [v for v in violations if first(v) == "response"], [v for v in violations if first(v) == "request"]


class Walk:
    def __init__(self):
        self.failures = []
        self.steps = 0
        self.exercised = {}  # (METHOD, template) -> statuses seen through Prism
        self.skipped = []

    def fail(self, what, why, res=None):
        detail = ""
        if res is not None:
            detail = f"\n      status {res.status}; body {res.body[:600]!r}"
            if res.header("sl-violations"):
                detail += f"\n      sl-violations {res.header('sl-violations')[:1500]}"
        self.failures.append(f"{what}: {why}{detail}")
        print(f"FAIL {what}: {why}{detail}", flush=True)

    def call(self, via, method, path, *, token=None, headers=None, body=None, raw=None,
             content_type="application/json", expect=200, code=None, request_violation=False,
             prism_error=False, label=None):
        """One request. `expect`: status or tuple of statuses. `code`: error code(s) expected.
        `request_violation`: True when Prism must report the request as breaking the document
        (lenient only), None when either is fine. `prism_error`: the answer is Prism's own."""
        self.steps += 1
        what = label or f"{via} {method} {path}"
        h = {"X-Request-Id": f"conf-{self.steps}"}
        if token:
            h["Authorization"] = f"Bearer {token}"
        h.update(headers or {})
        data = None
        if raw is not None:
            data = raw if isinstance(raw, bytes) else raw.encode()
        elif body is not None:
            # Compact, as Prism re-serializes JSON bodies: the bytes signed are the bytes sent on.
            data = json.dumps(body, separators=(",", ":")).encode()
        if data is not None and content_type:
            h["Content-Type"] = content_type
        url = urllib.parse.urlsplit(VIA[via])
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
        try:
            conn.request(method, path, body=data, headers=h)
            r = conn.getresponse()
            res = Response(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
        except (OSError, http.client.HTTPException) as e:
            self.fail(what, f"no answer: {e}")
            return Response(0, {}, b"")
        finally:
            conn.close()
        if VERBOSE:
            print(f"  {what} -> {res.status} {res.code or ''}", flush=True)

        expected = expect if isinstance(expect, tuple) else (expect,)
        is_prism = (res.header("content-type") or "").startswith("application/problem+json")
        if prism_error:
            if not is_prism or res.status not in expected:
                self.fail(what, f"expected Prism's own {expected} (the document should not have this)", res)
            return res
        if is_prism:
            self.fail(what, "Prism refused the request or the response", res)
            return res
        if res.status not in expected:
            self.fail(what, f"expected status {expected}", res)
        response_violations, request_violations = violations_of(res) if via != "direct" else ([], [])
        if response_violations:
            self.fail(what, f"response breaks the document: {json.dumps(response_violations)[:1500]}")
        if via == "lenient" and request_violation is True and not request_violations:
            self.fail(what, "the server refused the request but the document allows it "
                            "(Prism saw no request violation)", res)
        if via == "strict" and request_violations:
            self.fail(what, f"request breaks the document: {json.dumps(request_violations)[:800]}")
        if code is not None:
            codes = code if isinstance(code, tuple) else (code,)
            if res.code not in codes:
                self.fail(what, f"expected error code {codes}, got {res.code}", res)
        self.check_envelope(what, res)
        template = template_of(path)
        if via != "direct" and template and (method, template) in OPERATIONS:
            self.exercised.setdefault((method, template), set()).add(res.status)
        return res

    def check_envelope(self, what, res):
        """What Prism checks for documented routes, here for every answer: X-Request-Id on
        every response, and on an error the envelope with that id."""
        rid = res.header("x-request-id")
        if not rid:
            self.fail(what, "no X-Request-Id", res)
        if res.status >= 400:
            err = res.json.get("error") if isinstance(res.json, dict) else None
            if not isinstance(err, dict) or set(res.json) != {"error"}:
                self.fail(what, "error body is not {\"error\": {...}}", res)
                return
            if not set(err) <= {"code", "message", "request_id", "details"} or \
                    not all(isinstance(err.get(k), str) for k in ("code", "message", "request_id")):
                self.fail(what, "error envelope has other members or types", res)
            enum = DOC["components"]["schemas"]["ErrorCode"]["enum"]
            if err.get("code") not in enum:
                self.fail(what, f"error code {err.get('code')!r} is not in ErrorCode", res)
            if rid and err.get("request_id") != rid:
                self.fail(what, "error.request_id differs from X-Request-Id", res)

    def route_missing(self, res):
        """A route this binary does not have yet (404 not_found): tolerated with
        ALLOW_OLDER_BINARY."""
        return res.status == 404 and res.code == "not_found"


def main():
    w = Walk()
    S, L, D = "strict", "lenient", "direct"
    with open(os.path.join(DATA_DIR, "bootstrap-token"), encoding="utf-8") as f:
        boot = f.read().strip()

    # --- operations and documents (no credential)
    w.call(S, "GET", "/healthz")
    w.call(S, "GET", "/readyz")
    w.call(S, "GET", "/metrics")
    served = w.call(S, "GET", "/openapi.json")
    if served.status == 200:
        if served.json != json.loads(json.dumps(DOC)):
            if ALLOW_OLDER:
                w.skipped.append("GET /openapi.json serves another version of the document (older binary)")
            else:
                w.fail("GET /openapi.json", f"does not serve {DOC_PATH} (build from this checkout)")
    w.call(S, "GET", "/", expect=(200, 404))
    w.call(S, "GET", "/ui/app.js", expect=(200, 404))
    w.call(S, "GET", "/ui/no-such-file.js", expect=404, code="not_found")
    w.call(S, "GET", "/ui/api/index.html", expect=(200, 404))
    w.call(S, "GET", "/ui/no-such-dir/x.css", expect=404, code="not_found")

    # --- service tokens (admin)
    tokens = {}
    for scope in ("manage", "audit", "verify", "report_leaks"):
        r = w.call(S, "POST", "/v1/tokens", token=boot, body={"name": f"conformance-{scope}", "scopes": [scope]},
                   expect=201)
        tokens[scope] = (r.json or {}).get("token", "")
    MT, AT, VT, RT = tokens["manage"], tokens["audit"], tokens["verify"], tokens["report_leaks"]
    idem = {"Idempotency-Key": str(uuid.uuid4())}
    r1 = w.call(S, "POST", "/v1/tokens", token=boot, headers=idem, body={"name": "idem", "scopes": ["audit"]},
                expect=201)
    r2 = w.call(S, "POST", "/v1/tokens", token=boot, headers=idem, body={"name": "idem", "scopes": ["audit"]},
                expect=201, label="replayed POST /v1/tokens")
    if r2.header("idempotent-replayed") != "true" or (r2.json or {}).get("token") is not None:
        w.fail("replayed POST /v1/tokens", "no Idempotent-Replayed: true, or the token repeated", r2)
    w.call(S, "POST", "/v1/tokens", token=boot, headers=idem, body={"name": "other", "scopes": ["audit"]},
           expect=422, code="idempotency_key_reused")
    listed = w.call(S, "GET", "/v1/tokens", token=boot)
    # Every token reads its own record, whatever its scopes: the entry GET /v1/tokens lists.
    for token in (boot, MT, AT, VT, RT):
        r = w.call(S, "GET", "/v1/tokens/self", token=token)
        entries = [t for t in (listed.json or {}).get("tokens", [])
                   if t.get("token_id") == (r.json or {}).get("token_id")]
        if entries != [r.json]:
            w.fail("GET /v1/tokens/self", "not the caller's entry of GET /v1/tokens", r)
    doomed = (r1.json or {}).get("token_id", "tok_missing")
    w.call(S, "POST", f"/v1/tokens/{doomed}/revoke", token=boot)
    w.call(S, "POST", f"/v1/tokens/{doomed}/revoke", token=boot, body={}, expect=409, code="token_not_active")
    w.call(S, "POST", "/v1/tokens/tok_000000000000000000000000/revoke", token=boot, expect=404,
           code="token_not_found")
    w.call(L, "POST", "/v1/tokens/tok_000000000000000000000000/revoke", token=boot, body={"why": 1},
           expect=422, code="validation_failed", request_violation=True)
    w.call(L, "POST", "/v1/tokens", token=boot, body={"name": "", "scopes": ["root", "root"]}, expect=422,
           code="validation_failed", request_violation=True)
    w.call(L, "POST", "/v1/tokens", token=boot, body={"name": 7, "scopes": ["audit"]}, expect=400,
           code="invalid_json", request_violation=True)

    # --- credentials
    w.call(L, "GET", "/v1/tokens", expect=401, code="unauthorized", request_violation=True)
    w.call(S, "GET", "/v1/tokens", token="kls_" + "A" * 43, expect=401, code="unauthorized")
    w.call(S, "GET", "/v1/tokens", token=AT, expect=403, code="forbidden")
    w.call(L, "GET", "/v1/tokens/self", expect=401, code="unauthorized", request_violation=True)
    w.call(S, "GET", "/v1/tokens/self", token="kls_" + "A" * 43, expect=401, code="unauthorized")
    w.call(S, "GET", "/v1/tokens/self", token=(r1.json or {}).get("token", ""), expect=401, code="unauthorized",
           label="GET /v1/tokens/self with a revoked token")
    w.call(S, "POST", "/v1/verify", token=MT, body={"api_key": "x"}, expect=403, code="forbidden")

    # --- agents (manage; GETs also audit)
    profile = {"name": "Conformance Agent", "description": "Walks every route of the OpenAPI document.",
               "skills": ["testing"], "languages": ["en"], "webhook_url": "http://127.0.0.1:9/hook"}
    r = w.call(S, "POST", "/v1/agents", token=MT, headers={"X-Actor": "conformance@example.com",
                                                          "Idempotency-Key": str(uuid.uuid4())},
               body=dict(profile, environment="staging", owner_id="usr_conf"), expect=201)
    aid = (r.json or {}).get("agent_id", "agt_missing")
    w.call(S, "GET", f"/v1/agents/{aid}", token=AT)
    w.call(S, "GET", f"/v1/agents/{aid}", token=MT)
    w.call(S, "GET", "/v1/agents/agt_000000000000000000000000", token=AT, expect=404, code="agent_not_found")
    w.call(S, "PUT", f"/v1/agents/{aid}/rate-limit", token=MT, body={"tier": "elevated"})
    w.call(S, "PUT", f"/v1/agents/{aid}/rate-limit", token=MT, body={"tier": "standard"})
    w.call(S, "PUT", f"/v1/agents/{aid}/rate-limit", token=MT, body={"tier": "platinum"}, expect=422,
           code="validation_failed")
    w.call(S, "PUT", "/v1/agents/agt_000000000000000000000000/rate-limit", token=MT, body={"tier": "standard"},
           expect=404, code="agent_not_found")
    w.call(L, "PUT", f"/v1/agents/{aid}/rate-limit", token=MT, body={}, expect=422, code="validation_failed",
           request_violation=True)
    w.call(L, "POST", "/v1/agents", token=MT,
           body={"name": "", "description": "too short", "skills": [], "languages": ["en", "en"],
                 "webhook_url": "not a url", "environment": "prod"},
           expect=422, code="validation_failed", request_violation=True)
    w.call(L, "POST", "/v1/agents", token=MT, body=dict(profile, colour="blue"), expect=422,
           code="validation_failed", request_violation=True)
    w.call(L, "POST", "/v1/agents", token=MT, raw="name=x", content_type="text/plain", expect=415,
           code="unsupported_media_type", request_violation=True)
    w.call(L, "POST", "/v1/agents", token=MT, headers={"X-Actor": "x" * 129}, body=profile, expect=422,
           code="validation_failed", request_violation=True)
    w.call(S, "POST", "/v1/agents", token=MT, body=dict(profile, webhook_url="ftp://example.com/x"),
           expect=422, code="validation_failed")

    # --- keys
    r = w.call(S, "POST", f"/v1/agents/{aid}/keys", token=MT, expect=201)
    k1, kid1 = (r.json or {}).get("api_key", ""), ((r.json or {}).get("key") or {}).get("key_id", "key_missing")
    w.call(S, "GET", "/v1/tokens/self", token=k1, expect=403, code="forbidden",
           label="GET /v1/tokens/self with an agent key")
    idem = {"Idempotency-Key": str(uuid.uuid4())}
    w.call(S, "POST", f"/v1/agents/{aid}/keys", token=MT, headers=idem, body={"label": "idem"}, expect=201)
    r = w.call(S, "POST", f"/v1/agents/{aid}/keys", token=MT, headers=idem, body={"label": "idem"}, expect=201,
               label="replayed POST /v1/agents/{agent_id}/keys")
    if r.header("idempotent-replayed") != "true" or "api_key" in (r.json or {}):
        w.fail("replayed POST keys", "no Idempotent-Replayed: true, or the key repeated", r)
    w.call(S, "POST", f"/v1/agents/{aid}/keys", token=MT, headers=idem, body={"label": "other"}, expect=422,
           code="idempotency_key_reused")
    idem_kid = ((r.json or {}).get("key") or {}).get("key_id", "key_missing")
    w.call(S, "POST", "/v1/agents/agt_000000000000000000000000/keys", token=MT, body={}, expect=404,
           code="agent_not_found")
    w.call(L, "POST", f"/v1/agents/{aid}/keys", token=MT, body={"label": 5}, expect=400, code="invalid_json",
           request_violation=True)
    w.call(L, "POST", f"/v1/agents/{aid}/keys", token=MT, body=[], expect=400, code="invalid_json",
           request_violation=True)
    w.call(L, "POST", f"/v1/agents/{aid}/keys", token=MT, body={"expires_in_seconds": 0}, expect=422,
           code="validation_failed", request_violation=True)
    w.call(L, "POST", f"/v1/agents/{aid}/keys", token=MT, body={"lable": "typo"}, expect=422,
           code="validation_failed", request_violation=True)
    r = w.call(S, "POST", f"/v1/agents/{aid}/keys", token=MT, body={"label": "prod", "expires_in_seconds": 7776000},
               expect=201)
    k2, kid2 = (r.json or {}).get("api_key", ""), ((r.json or {}).get("key") or {}).get("key_id", "key_missing")
    w.call(S, "GET", f"/v1/agents/{aid}/keys", token=AT)
    w.call(S, "GET", f"/v1/agents/{aid}/keys?status=active", token=MT)
    w.call(S, "GET", f"/v1/agents/{aid}/keys?status=revoked", token=AT)
    w.call(L, "GET", f"/v1/agents/{aid}/keys?status=gone", token=AT, expect=422, code="validation_failed",
           request_violation=True)
    w.call(S, "GET", "/v1/agents/agt_000000000000000000000000/keys", token=AT, expect=404, code="agent_not_found")
    w.call(S, "GET", f"/v1/keys/{kid1}", token=AT)
    w.call(S, "GET", "/v1/keys/key_000000000000000000000000", token=MT, expect=404, code="key_not_found")
    w.call(S, "GET", "/v1/keys/due-for-rotation", token=AT)
    w.call(S, "GET", "/v1/keys/due-for-rotation?older_than_days=0", token=MT)
    w.call(L, "GET", "/v1/keys/due-for-rotation?older_than_days=-1", token=AT, expect=422,
           code="validation_failed", request_violation=True)

    # rotate, revoke, compromise
    r = w.call(S, "POST", f"/v1/keys/{kid1}/rotate", token=MT, headers={"Idempotency-Key": str(uuid.uuid4())},
               body={"label": "rotated", "old_key_expires_in_seconds": 3600}, expect=201)
    k3, kid3 = (r.json or {}).get("api_key", ""), ((r.json or {}).get("key") or {}).get("key_id", "key_missing")
    w.call(S, "POST", f"/v1/keys/{kid1}/revoke", token=MT, body={"reason": "conformance walk"})
    w.call(S, "POST", f"/v1/keys/{kid1}/revoke", token=MT, expect=409, code="key_not_active")
    w.call(S, "POST", f"/v1/keys/{kid1}/rotate", token=MT, expect=409, code="key_not_active")
    w.call(S, "POST", "/v1/keys/key_000000000000000000000000/rotate", token=MT, expect=404, code="key_not_found")
    w.call(S, "POST", "/v1/keys/key_000000000000000000000000/revoke", token=MT, expect=404, code="key_not_found")
    w.call(L, "POST", f"/v1/keys/{kid3}/rotate", token=MT, body={"old_key_expires_in_seconds": 604801},
           expect=422, code="validation_failed", request_violation=True)
    w.call(L, "POST", f"/v1/keys/{kid3}/revoke", token=MT, body={"reason": "r" * 201}, expect=422,
           code="validation_failed", request_violation=True)
    r = w.call(S, "POST", f"/v1/keys/{kid2}/compromise", token=MT,
               body={"note": "found in a gist", "source": "conformance", "replace": True})
    k4 = ((r.json or {}).get("replacement") or {}).get("api_key", "")
    kid4 = (((r.json or {}).get("replacement") or {}).get("key") or {}).get("key_id", "key_missing")
    w.call(S, "POST", f"/v1/keys/{kid2}/compromise", token=MT, expect=409, code="key_already_compromised")
    w.call(S, "POST", "/v1/keys/key_000000000000000000000000/compromise", token=MT, expect=404,
           code="key_not_found")
    w.call(L, "POST", f"/v1/keys/{kid3}/compromise", token=MT, body={"replace": "yes"}, expect=400,
           code="invalid_json", request_violation=True)
    # ten active keys: the eleventh, a rotation and a replacement are refused
    active = [k for k in (idem_kid, kid3, kid4)]
    extra = []
    while len(active) + len(extra) < 10:
        r = w.call(S, "POST", f"/v1/agents/{aid}/keys", token=MT, body={"label": "filler"}, expect=201)
        extra.append(((r.json or {}).get("key") or {}).get("key_id", "key_missing"))
    w.call(S, "POST", f"/v1/agents/{aid}/keys", token=MT, expect=409, code="too_many_active_keys")
    w.call(S, "POST", f"/v1/keys/{kid3}/rotate", token=MT, expect=409, code="too_many_active_keys")
    w.call(S, "POST", f"/v1/keys/{kid1}/compromise", token=MT, body={"replace": True}, expect=409,
           code="too_many_active_keys")
    for kid in extra:
        w.call(S, "POST", f"/v1/keys/{kid}/revoke", token=MT, body={})

    # --- verification
    w.call(S, "POST", "/v1/verify", token=VT, body={"api_key": k3})
    w.call(S, "POST", "/v1/verify", token=VT, body={"api_key": k1, "cost": 0})
    w.call(S, "POST", "/v1/verify", token=VT, body={"api_key": k2})
    w.call(S, "POST", "/v1/verify", token=VT, body={"api_key": "cg_" + "0" * 32})
    w.call(S, "POST", "/v1/verify", token=VT, body={"api_key": "not-a-key"})
    w.call(S, "POST", "/v1/verify", token=VT, body={})
    w.call(S, "POST", "/v1/verify", token=VT, body={"api_key": k3, "cost": 1000}, expect=422,
           code="validation_failed")
    w.call(L, "POST", "/v1/verify", token=VT, body={"api_key": k3, "cost": 1001}, expect=422,
           code="validation_failed", request_violation=True)
    w.call(L, "POST", "/v1/verify", token=VT, body={"api_key": k3, "extra": 1}, expect=422,
           code="validation_failed", request_violation=True)
    w.call(L, "POST", "/v1/verify", token=VT, body={"api_key": 12}, expect=400, code="invalid_json",
           request_violation=True)

    # --- the agent itself, and forward auth
    w.call(S, "GET", "/v1/self", token=k3)
    w.call(S, "GET", "/v1/self", headers={"X-Api-Key": k3})
    w.call(S, "GET", "/v1/self", token=k1, expect=401, code="unauthorized")
    w.call(L, "GET", "/v1/self", expect=401, code="unauthorized", request_violation=True)
    w.call(S, "GET", "/v1/auth", token=k3)
    w.call(S, "GET", "/v1/auth", headers={"X-Api-Key": k3, "X-Forwarded-For": "203.0.113.7"})
    w.call(S, "GET", "/v1/auth", token=k2, expect=401, code="unauthorized")
    w.call(S, "GET", "/v1/auth", token=MT, expect=401, code="unauthorized")
    w.call(L, "GET", "/v1/auth", expect=401, code="unauthorized", request_violation=True)
    r = w.call(S, "GET", "/v1/self/webhook-deliveries?limit=1", token=k3)
    cursor = (r.json or {}).get("next_cursor")
    if cursor:
        w.call(S, "GET", f"/v1/self/webhook-deliveries?limit=1&cursor={cursor}", token=k3)
    w.call(S, "GET", "/v1/self/webhook-deliveries?cursor=bm9wZQ", token=k3, expect=422, code="validation_failed")
    w.call(L, "GET", "/v1/self/webhook-deliveries?limit=0", token=k3, expect=422, code="validation_failed",
           request_violation=True)
    usage = w.call(S, "GET", "/v1/self/usage", token=k3)
    if usage.status == 404 and usage.code == "not_found" and ALLOW_OLDER:
        w.skipped.append("usage routes: not in this binary")
    else:
        w.call(S, "GET", "/v1/self/usage?granularity=hour", token=k3)
        w.call(L, "GET", "/v1/self/usage?granularity=day", token=k3, expect=422, code="validation_failed",
               request_violation=True)
        w.call(S, "GET", "/v1/self/usage?since=2020-01-01T00:00:00Z", token=k3, expect=422,
               code="validation_failed")
        w.call(S, "GET", f"/v1/keys/{kid3}/usage", token=AT)
        w.call(S, "GET", f"/v1/keys/{kid3}/usage?granularity=hour&since=2026-01-01T00:00:00Z"
                         f"&until=2026-01-02T00:00:00Z", token=AT)
        w.call(S, "GET", f"/v1/keys/{kid3}/usage?since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z",
               token=AT, expect=422, code="validation_failed")
        w.call(S, "GET", "/v1/keys/key_000000000000000000000000/usage", token=AT, expect=404, code="key_not_found")
        w.call(S, "GET", f"/v1/keys/{kid3}/usage", token=MT, expect=403, code="forbidden")
        w.call(S, "GET", f"/v1/agents/{aid}/usage?granularity=hour", token=AT)
        w.call(S, "GET", "/v1/agents/agt_000000000000000000000000/usage", token=AT, expect=404,
               code="agent_not_found")
        w.call(L, "GET", f"/v1/agents/{aid}/usage?until=yesterday", token=AT, expect=422,
               code="validation_failed", request_violation=None)

    # rate limits: a second agent on the wrapper's tier "trickle" (0.01/s, burst 5), drained
    # by one verification of cost 5
    r = w.call(S, "POST", "/v1/agents", token=MT, body=dict(profile, name="Drained"), expect=201)
    aid2 = (r.json or {}).get("agent_id", "agt_missing")
    w.call(S, "PUT", f"/v1/agents/{aid2}/rate-limit", token=MT, body={"tier": "trickle"})
    r = w.call(S, "POST", f"/v1/agents/{aid2}/keys", token=MT, expect=201)
    k5 = (r.json or {}).get("api_key", "")
    w.call(S, "POST", "/v1/verify", token=VT, body={"api_key": k5, "cost": 5})
    r = w.call(S, "POST", "/v1/verify", token=VT, body={"api_key": k5})
    if (r.json or {}).get("code") != "RATE_LIMITED":
        w.fail("POST /v1/verify (drained)", "expected RATE_LIMITED", r)
    w.call(S, "GET", "/v1/auth", token=k5, expect=429, code="rate_limited")
    w.call(S, "GET", "/v1/self", token=k5, expect=429, code="rate_limited")
    w.call(S, "GET", "/v1/self/webhook-deliveries", token=k5, expect=429, code="rate_limited")
    w.call(S, "GET", "/v1/self/usage", token=k5, expect=(429, 404) if ALLOW_OLDER else 429)

    # --- audit and webhook deliveries
    r = w.call(S, "GET", "/v1/audit?limit=2", token=AT)
    if (r.json or {}).get("next_cursor"):
        w.call(S, "GET", f"/v1/audit?limit=2&cursor={r.json['next_cursor']}", token=AT)
    w.call(S, "GET", f"/v1/audit?order=desc&type=key.created&agent_id={aid}&limit=5", token=AT)
    w.call(S, "GET", f"/v1/audit?key_id={kid1}&actor=conformance-manage&since=2020-01-01T00:00:00Z"
                     f"&until=2100-01-01T00:00:00Z", token=AT)
    w.call(S, "GET", "/v1/audit?type=token.revoked", token=AT)
    w.call(L, "GET", "/v1/audit?order=sideways", token=AT, expect=422, code="validation_failed",
           request_violation=True)
    w.call(S, "GET", "/v1/audit?colour=blue", token=AT, expect=422, code="validation_failed")
    w.call(S, "GET", "/v1/audit", token=MT, expect=403, code="forbidden")
    r = w.call(S, "GET", f"/v1/agents/{aid}/webhook-deliveries?limit=1", token=AT)
    deliveries = (r.json or {}).get("deliveries") or []
    w.call(S, "GET", f"/v1/agents/{aid}/webhook-deliveries", token=MT)
    w.call(S, "GET", "/v1/agents/agt_000000000000000000000000/webhook-deliveries", token=AT, expect=404,
           code="agent_not_found")
    if deliveries:
        # the target refuses connections: the delivery is still retrying
        w.call(S, "POST", f"/v1/agents/{aid}/webhook-deliveries/{deliveries[0]['event_id']}/retry", token=MT,
               expect=409, code=("delivery_pending", "delivery_not_failed"))
    else:
        w.fail("webhook deliveries", "no delivery recorded for the walk's agent")
    w.call(S, "POST", f"/v1/agents/{aid}/webhook-deliveries/{uuid.uuid4()}/retry", token=MT, expect=404,
           code="event_not_found")
    w.call(S, "POST", f"/v1/agents/agt_000000000000000000000000/webhook-deliveries/{uuid.uuid4()}/retry",
           token=MT, expect=404, code="agent_not_found")
    w.call(L, "POST", f"/v1/agents/{aid}/webhook-deliveries/{uuid.uuid4()}/retry", token=MT,
           body={"now": True}, expect=422, code="validation_failed", request_violation=True)

    # --- leaks
    report = [{"token": k3, "type": "clawgig_api_key", "url": "https://example.com/leak", "source": "content"},
              {"token": "cg_" + "1" * 32, "type": "clawgig_api_key"},
              {"token": "hello", "type": "clawgig_api_key", "source": "commit"}]
    r = w.call(S, "POST", "/v1/leaks", token=RT, headers={"Idempotency-Key": str(uuid.uuid4())}, body=report)
    if results_of(r) != ["revoked", "unknown", "malformed"]:
        w.fail("POST /v1/leaks", f"unexpected results {results_of(r)}", r)
    w.call(S, "POST", "/v1/leaks", token=RT, body=report[:1])
    w.call(S, "POST", "/v1/leaks", token=AT, body=report, expect=403, code="forbidden")
    w.call(L, "POST", "/v1/leaks", token=RT, body=[{"type": "x"}] * 101, expect=422, code="validation_failed",
           request_violation=True)
    w.call(L, "POST", "/v1/leaks", token=RT, body=[{"type": "x"}], expect=422, code="validation_failed",
           request_violation=True)
    w.call(L, "POST", "/v1/leaks", token=RT, body={"token": k3}, expect=400, code="invalid_json",
           request_violation=True)
    w.call(L, "POST", "/v1/leaks", token=RT, body=["cg_x"], expect=400, code="invalid_json",
           request_violation=True)

    # --- GitHub secret scanning (signed with the walk's own P-256 key)
    probe = w.call(D, "POST", "/v1/leaks/github", body=[], expect=(401, 404))
    if w.route_missing(probe):
        if ALLOW_OLDER:
            w.skipped.append("POST /v1/leaks/github: not in this binary")
        else:
            w.fail("POST /v1/leaks/github", "the binary does not serve it", probe)
    elif not GITHUB_DIR:
        w.fail("POST /v1/leaks/github", "no test key pair (openssl missing?)")
    else:
        with open(os.path.join(GITHUB_DIR, "key-id"), encoding="utf-8") as f:
            key_id = f.read().strip()

        def sign(data, key="signing.pem"):
            der = subprocess.run(["openssl", "dgst", "-sha256", "-sign", os.path.join(GITHUB_DIR, key)],
                                 input=data, capture_output=True, check=True).stdout
            return base64.b64encode(der).decode()

        r = w.call(S, "POST", f"/v1/agents/{aid}/keys", token=MT, expect=201)
        k6 = (r.json or {}).get("api_key", "")
        leaked = [{"token": k6, "type": "clawgig_api_key", "url": "https://github.com/o/r/blob/main/.env",
                   "source": "content"}]
        data = json.dumps(leaked, separators=(",", ":")).encode()
        gh = lambda sig, kid=key_id: {"Github-Public-Key-Identifier": kid, "Github-Public-Key-Signature": sig}
        r = w.call(S, "POST", "/v1/leaks/github", headers=gh(sign(data)), raw=data)
        if results_of(r) != ["revoked"]:
            w.fail("POST /v1/leaks/github", "a signed report of an active key did not revoke it", r)
        tampered = data.replace(b"content", b"commit!")
        w.call(S, "POST", "/v1/leaks/github", headers=gh(sign(data)), raw=tampered, expect=401,
               code="invalid_signature")
        w.call(S, "POST", "/v1/leaks/github", headers=gh(sign(data, "other.pem")), raw=data, expect=401,
               code="invalid_signature")
        w.call(S, "POST", "/v1/leaks/github", headers=gh(sign(data), "0" * 64), raw=data, expect=401,
               code="invalid_signature")
        w.call(L, "POST", "/v1/leaks/github", raw=data, expect=401, code="invalid_signature",
               request_violation=True)
        bad = json.dumps([{"type": "x"}], separators=(",", ":")).encode()
        w.call(L, "POST", "/v1/leaks/github", headers=gh(sign(bad)), raw=bad, expect=422,
               code="validation_failed", request_violation=True)

    # --- field rules, one at a time: the server refuses each broken rule alone (422, or 400 for
    # a wrong JSON type) and Prism sees it too, so the document is not looser than the server;
    # requests at every limit pass both, so it is not stricter either.
    def each_rule(method, path, token, base, changes, expect=422):
        for change in changes:
            body = dict(base)
            for field, value in change.items():
                if value is DROP:
                    body.pop(field, None)
                else:
                    body[field] = value
            shown = json.dumps(change, default=lambda _: "<absent>")[:80]
            w.call(L, method, path, token=token, body=body, expect=expect, request_violation=True,
                   label=f"rule {method} {template_of(path)} {shown}")

    DROP = object()
    each_rule("POST", "/v1/agents", MT, profile, [
        {"name": ""}, {"name": "n" * 101}, {"name": DROP},
        {"description": "d" * 19}, {"description": "d" * 2001}, {"description": DROP},
        {"skills": []}, {"skills": ["a", "a"]}, {"skills": [""]}, {"skills": ["s" * 65]},
        {"skills": [f"s{i}" for i in range(51)]}, {"skills": DROP},
        {"languages": []}, {"languages": ["en", "en"]}, {"languages": [f"l{i}" for i in range(21)]},
        {"webhook_url": "no scheme"}, {"webhook_url": "https://example.com/" + "p" * 2030},
        {"webhook_url": DROP}, {"environment": "prod"}, {"owner_id": "o" * 129}, {"colour": "blue"},
    ])
    at_limits = {"name": "N" * 100, "description": "D" * 2000, "skills": [f"{i:02d}" + "s" * 62 for i in range(50)],
                 "languages": [f"{i:02d}" for i in range(20)], "owner_id": "o" * 128,
                 "webhook_url": "https://example.com/" + "p" * 2028, "environment": None}
    w.call(S, "POST", "/v1/agents", token=MT, body=at_limits, expect=201, label="POST /v1/agents at every maximum")
    r = w.call(S, "POST", "/v1/agents", token=MT, expect=201, label="POST /v1/agents at every minimum",
               body={"name": "N", "description": "D" * 20, "skills": ["s"], "languages": ["l"],
                     "webhook_url": "https://example.com", "environment": "production", "owner_id": ""})
    aid3 = (r.json or {}).get("agent_id", "agt_missing")
    each_rule("POST", "/v1/tokens", boot, {"name": "t", "scopes": ["audit"]}, [
        {"name": ""}, {"name": "t" * 101}, {"name": DROP}, {"scopes": []}, {"scopes": ["root"]},
        {"scopes": ["audit", "audit"]}, {"scopes": DROP}, {"ttl": 1},
    ])
    w.call(S, "POST", "/v1/tokens", token=boot, expect=201, label="POST /v1/tokens at every maximum",
           body={"name": "t" * 100, "scopes": ["manage", "verify", "audit", "report_leaks", "admin"]})
    keys = f"/v1/agents/{aid3}/keys"
    each_rule("POST", keys, MT, {}, [{"label": "l" * 101}, {"expires_in_seconds": 0},
                                     {"expires_in_seconds": 316224001}])
    each_rule("POST", keys, MT, {}, [{"label": 1}, {"expires_in_seconds": "60"}], expect=400)
    edge = []
    for body in ({"label": "l" * 100, "expires_in_seconds": 316224000}, {"label": "", "expires_in_seconds": 1},
                 {"label": None, "expires_in_seconds": None}):
        r = w.call(S, "POST", keys, token=MT, body=body, expect=201, label=f"POST keys {json.dumps(body)[:60]}")
        edge.append(((r.json or {}).get("key") or {}).get("key_id", "key_missing"))
    each_rule("POST", f"/v1/keys/{edge[2]}/rotate", MT, {}, [
        {"label": "l" * 101}, {"old_key_expires_in_seconds": -1}, {"old_key_expires_in_seconds": 604801}])
    w.call(S, "POST", f"/v1/keys/{edge[2]}/rotate", token=MT, expect=201,
           body={"label": "l" * 100, "old_key_expires_in_seconds": 604800})
    w.call(S, "POST", f"/v1/keys/{edge[1]}/rotate", token=MT, expect=201, body={"old_key_expires_in_seconds": 0})
    each_rule("POST", f"/v1/keys/{edge[0]}/revoke", MT, {}, [{"reason": "r" * 201}, {"why": "x"}])
    w.call(S, "POST", f"/v1/keys/{edge[0]}/revoke", token=MT, body={"reason": "r" * 200})
    each_rule("POST", f"/v1/keys/{edge[2]}/compromise", MT, {}, [
        {"note": "n" * 2001}, {"source": "s" * 201}, {"urgent": True}])
    w.call(S, "POST", f"/v1/keys/{edge[2]}/compromise", token=MT,
           body={"note": "n" * 2000, "source": "s" * 200, "replace": False})
    each_rule("POST", "/v1/verify", VT, {"api_key": k3}, [{"cost": -1}, {"cost": 1001}, {"key": k3}])
    each_rule("POST", "/v1/verify", VT, {"api_key": k3}, [{"cost": 1.5}, {"cost": "1"}], expect=400)
    r = w.call(S, "POST", f"/v1/agents/{aid}/keys", token=MT, expect=201)
    k_elevated = (r.json or {}).get("api_key", "")
    w.call(S, "PUT", f"/v1/agents/{aid}/rate-limit", token=MT, body={"tier": "elevated"})
    r = w.call(S, "POST", "/v1/verify", token=VT, body={"api_key": k_elevated, "cost": 1000},
               label="POST /v1/verify cost 1000 (the elevated burst)")
    if (r.json or {}).get("code") != "VALID":
        w.fail("POST /v1/verify cost 1000", "expected VALID", r)
    for query in ("limit=0", "limit=1001", "order=up"):
        w.call(L, "GET", f"/v1/audit?{query}", token=AT, expect=422, request_violation=True)
    w.call(S, "GET", "/v1/audit?limit=1000&order=asc", token=AT)
    for query in ("limit=0", "limit=1001"):
        w.call(L, "GET", f"/v1/agents/{aid}/webhook-deliveries?{query}", token=AT, expect=422,
               request_violation=True)
    w.call(S, "GET", f"/v1/agents/{aid}/webhook-deliveries?limit=1000", token=AT)
    w.call(L, "GET", "/v1/keys/due-for-rotation?older_than_days=36601", token=AT, expect=422,
           request_violation=True)
    w.call(S, "GET", "/v1/keys/due-for-rotation?older_than_days=36600", token=AT)
    each_rule("POST", "/v1/leaks", RT, {}, [], expect=422)
    for items in ([{"token": ""}], [{"token": "cg_x", "kind": "x"}], [{"token": "cg_x"}] * 101):
        w.call(L, "POST", "/v1/leaks", token=RT, body=items, expect=422, request_violation=True,
               label=f"rule POST /v1/leaks {json.dumps(items)[:60]}")
    w.call(S, "POST", "/v1/leaks", token=RT, body=[{"token": "cg_x"}] * 100, label="POST /v1/leaks 100 items")
    w.call(S, "POST", "/v1/leaks", token=RT, body=[], label="POST /v1/leaks []")

    # --- unknown routes, wrong methods, and what Prism cannot carry
    for path in ("/v1/nope", "/v1/keys", "/v1/agents/x/y/z"):
        w.call(L, "GET", path, expect=404, code="not_found")
        w.call(S, "GET", path, expect=404, prism_error=True)
    for path, item in DOC["paths"].items():
        concrete = re.sub(r"\{[^}]*\}", "x", path)
        documented = sorted(m.upper() for m in item if m in METHODS)
        for method in ("DELETE", "PATCH"):
            older = ALLOW_OLDER and w.route_missing(w.call(D, method, concrete, expect=(404, 405)))
            if older:
                w.skipped.append(f"{path}: not in this binary")
                break
            r = w.call(L, method, concrete, expect=405, code="method_not_allowed", label=f"{method} {path}")
            allow = sorted(a.strip() for a in (r.header("allow") or "").split(",") if a.strip())
            if r.status == 405 and allow != documented:
                w.fail(f"{method} {path}", f"Allow {allow} but the document has {documented}", r)
        w.call(S, "DELETE", concrete, expect=405, prism_error=True, label=f"strict DELETE {path}")
    w.call(D, "POST", "/v1/agents", token=MT, raw="{not json", expect=400, code="invalid_json")
    w.call(D, "POST", f"/v1/agents/{aid}/keys", token=MT, raw="x" * (65 * 1024), expect=413,
           code="payload_too_large")
    w.call(D, "GET", "/v1/agents/../tokens", token=boot, expect=(400, 404), code=("bad_request", "not_found"))
    w.call(D, "GET", "/v1/%61gents/" + aid, token=AT, expect=(200, 400, 404))

    # --- coverage: every documented operation went through Prism at least once
    missing = sorted(OPERATIONS - set(w.exercised))
    for method, path in missing:
        if any(path in s for s in w.skipped):
            continue
        w.fail("coverage", f"{method} {path} was never exercised through Prism")
    no_success = sorted(op for op, statuses in w.exercised.items() if not any(200 <= s < 300 for s in statuses))
    print(f"\n{w.steps} requests; {len(w.exercised)}/{len(OPERATIONS)} documented operations exercised "
          f"through Prism", flush=True)
    if no_success:
        print("exercised without a 2xx (the build has no such file, say): "
              + ", ".join(f"{m} {p}" for m, p in no_success))
    for s in sorted(set(w.skipped)):
        print(f"SKIPPED (--allow-older-binary): {s}")
    if w.failures:
        print(f"\n{len(w.failures)} failure(s)", file=sys.stderr)
        return 1
    print("conformance: ok")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception:  # a step's answer was not what later steps need: earlier FAILs say why
        import traceback
        traceback.print_exc()
        print("conformance: the walk stopped early", file=sys.stderr)
        sys.exit(1)
