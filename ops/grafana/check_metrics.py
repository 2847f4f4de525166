#!/usr/bin/env python3
"""Checks that every PromQL expression of a Grafana dashboard and of Prometheus rule files
names only metrics a keyledger scrape exports (stdlib only; run by ops/grafana/test).

    check_metrics.py --scrape FILE [--scrape FILE…] [--dashboard JSON…] [--rules YAML…]
                     [--emit-rules OUT]

A metric is exported when a sample of that name is in one of the scrapes: a histogram is
named by its `_bucket`, `_sum` or `_count` series (reported under its family name), and its
bare family name, which has no samples, is refused. `up` (added by Prometheus to every
target) is the one name allowed without a sample. Label names in selectors must be
exported on that metric (or be job/instance, which Prometheus attaches); values compared
with = or != (and plain alternations in =~/!~) must be exported values, except for `status`
and `le`, which depend on the traffic. --emit-rules writes the dashboard's expressions as
recording rules, Grafana variables filled in, so `promtool check rules` can parse them.
Exit status 0 when all is well, 1 with one line per problem otherwise."""

import argparse
import json
import re
import sys

PROMETHEUS_NAMES = {"up"}  # attached to every target by Prometheus itself
TARGET_LABELS = {"job", "instance"}
TRAFFIC_DEPENDENT_LABELS = {"status", "le"}
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
            "offset", "bool", "inf", "nan", "atan2"}
GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


# --- the scrape ---------------------------------------------------------------------------

SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(\{(.*)\})?\s+\S+")
LABEL_PAIR = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"\s*,?')


class Scrape:
    def __init__(self):
        self.types = {}   # family -> counter|gauge|histogram|summary|untyped
        self.labels = {}  # sample name -> {label: set(values)}

    def read(self, path):
        for line in open(path, encoding="utf-8"):
            line = line.rstrip("\n")
            if line.startswith("# TYPE "):
                _, _, name, kind = line.split(None, 3)
                self.types[name] = kind.strip()
                continue
            if not line or line.startswith("#"):
                continue
            m = SAMPLE.match(line)
            if not m:
                raise SystemExit(f"{path}: not a sample line: {line}")
            labels = self.labels.setdefault(m.group(1), {})
            for name, value in LABEL_PAIR.findall(m.group(3) or ""):
                labels.setdefault(name, set()).add(value)

    def family_of(self, name):
        for suffix in HISTOGRAM_SUFFIXES:
            base = name[: -len(suffix)]
            if name.endswith(suffix) and self.types.get(base) in ("histogram", "summary"):
                return base
        return name


# --- PromQL, enough of it to find the metric names and their matchers ----------------------

TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<var>\$\{[^}]*\}|\$[A-Za-z_][A-Za-z0-9_]*)
  | (?P<number>(?:0x[0-9a-fA-F]+|\d+(?:\.\d*)?(?:[eE][+-]?\d+)?)(?:ms|[smhdwy])*
               (?:\d+(?:ms|[smhdwy]))*)
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<op>=~|!~|!=|==|<=|>=|[-+*/%^<>=(){}\[\],:@])
""", re.X)


def tokens(expr):
    pos, out = 0, []
    while pos < len(expr):
        m = TOKEN.match(expr, pos)
        if not m:
            raise ValueError(f"cannot read {expr[pos:pos + 20]!r}")
        pos = m.end()
        if m.lastgroup != "space":
            out.append((m.lastgroup, m.group()))
    return out


def unquote(s):
    if s[0] == "`":
        return s[1:-1]
    if s[0] == "'":
        s = '"' + s[1:-1].replace("\\'", "'").replace('"', '\\"') + '"'
    return json.loads(s)  # PromQL's escapes are Go's; JSON's agree for what selectors hold


def selectors(expr):
    """Yields (metric name or None, [(label, op, value)]) for each vector selector."""
    toks = tokens(expr)
    i = 0
    while i < len(toks):
        kind, text = toks[i]
        nxt = toks[i + 1][1] if i + 1 < len(toks) else None
        if kind == "ident" and text.lower() in GROUPING and nxt == "(":
            i = toks.index((toks[i + 1][0], ")"), i + 1) + 1  # skip the label list
            continue
        if text == "[":  # a range or subquery: durations, steps, variables
            i = toks.index(("op", "]"), i) + 1
            continue
        if kind == "ident" and text.lower() == "offset":
            i += 2
            continue
        if kind == "ident" and (nxt == "(" or (nxt or "").lower() in ("by", "without")):
            # a function, or an aggregation (its by/without clause may come first)
            i += 1
            continue
        if kind == "ident" and text.lower() in KEYWORDS:
            i += 1
            continue
        if kind == "ident" or text == "{":
            name = text if kind == "ident" else None
            matchers = []
            j = i + 1 if kind == "ident" else i
            if j < len(toks) and toks[j][1] == "{":
                j += 1
                while toks[j][1] != "}":
                    label, op, value = toks[j][1], toks[j + 1][1], toks[j + 2][1]
                    matchers.append((label, op, unquote(value)))
                    j += 3
                    if toks[j][1] == ",":
                        j += 1
                j += 1
            if name is None:
                name = next((v for l, o, v in matchers if l == "__name__" and o == "="), None)
            yield name, matchers
            i = j
            continue
        i += 1


LABEL_VALUES = re.compile(r"^\s*label_values\((.*),\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)\s*$", re.S)


# --- where the expressions are -------------------------------------------------------------

class Expr:
    def __init__(self, where, text, in_dashboard, label=None):
        self.where = where                # for messages
        self.text = text                  # PromQL (a selector alone for label_values)
        self.in_dashboard = in_dashboard  # holds Grafana variables
        self.label = label                # label_values(selector, label): the label


def dashboard_expressions(path):
    dash = json.load(open(path, encoding="utf-8"))
    found = []

    def walk(panels):
        for p in panels:
            for t in p.get("targets", []):
                if t.get("expr"):
                    found.append(Expr(f"{path}: panel {p.get('title')!r} {t.get('refId', '')}", t["expr"], True))
            walk(p.get("panels", []))

    walk(dash.get("panels", []))
    for var in dash.get("templating", {}).get("list", []):
        if var.get("type") != "query":
            continue
        query = var.get("query")
        query = query.get("query") if isinstance(query, dict) else query
        m = LABEL_VALUES.match(query or "")
        where = f"{path}: variable ${var['name']}"
        if m:
            found.append(Expr(where, m.group(1), True, label=m.group(2)))
        elif query:
            found.append(Expr(where, query, True))
    return found


def rule_expressions(path):
    """expr: values of a rule file: inline, quoted, or a | / > block. Stdlib only, so this
    reads the subset of YAML rule files use, and fails rather than guess."""
    lines = open(path, encoding="utf-8").read().splitlines()
    found, rules, name = [], 0, "?"
    for n, line in enumerate(lines):
        m = re.match(r"^\s*-?\s*(alert|record):\s*(\S+)", line)
        if m:
            name, rules = m.group(2), rules + 1
        m = re.match(r"^(\s*)(?:-\s*)?expr:\s*(.*?)\s*$", line)
        if not m:
            continue
        value = m.group(2)
        if value[:1] in ("|", ">"):
            indent, block = None, []
            for more in lines[n + 1:]:
                if not more.strip():
                    block.append("")
                    continue
                width = len(more) - len(more.lstrip())
                if indent is None:
                    indent = width
                if width < indent or width <= len(m.group(1)):
                    break
                block.append(more[indent:])
            value = "\n".join(block).strip()
        elif value[:1] == '"':
            value = json.loads(value)
        elif value[:1] == "'":
            value = value[1:-1].replace("''", "'")
        if not value:
            raise SystemExit(f"{path}:{n + 1}: cannot read the expr of {name}")
        found.append(Expr(f"{path}: {name}", value, False))
    if len(found) != rules:
        raise SystemExit(f"{path}: {rules} rules but {len(found)} expressions read")
    return found


GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


def fill_variables(expr):
    for var, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(var, value)
    return re.sub(r"\$\{?[A-Za-z_][A-Za-z0-9_]*\}?", ".*", expr)


# --- the check ------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scrape", action="append", required=True)
    ap.add_argument("--dashboard", action="append", default=[])
    ap.add_argument("--rules", action="append", default=[])
    ap.add_argument("--emit-rules")
    args = ap.parse_args()

    scrape = Scrape()
    for path in args.scrape:
        scrape.read(path)

    exprs = []
    for path in args.dashboard:
        exprs += dashboard_expressions(path)
    for path in args.rules:
        exprs += rule_expressions(path)

    problems, used = [], {}
    for e in exprs:
        try:
            found = list(selectors(e.text))
        except (ValueError, IndexError) as err:
            problems.append(f"{e.where}: cannot parse {e.text!r}: {err}")
            continue
        if not found:
            problems.append(f"{e.where}: names no metric: {e.text!r}")
        for name, matchers in found:
            if name is None:
                problems.append(f"{e.where}: a selector without a metric name")
                continue
            used.setdefault(scrape.family_of(name), set()).add(e.where)
            if name in PROMETHEUS_NAMES:
                continue
            if name not in scrape.labels:
                kind = scrape.types.get(name)
                hint = f" (a {kind}: name its _bucket/_sum/_count series)" if kind in ("histogram", "summary") else ""
                problems.append(f"{e.where}: {name} is not exported{hint}")
                continue
            exported = scrape.labels[name]
            if e.label and e.label not in TARGET_LABELS and e.label not in exported:
                problems.append(f"{e.where}: {name} has no label {e.label}")
            for label, op, value in matchers:
                if label in TARGET_LABELS or label == "__name__":
                    continue
                if label not in exported:
                    problems.append(f"{e.where}: {name} has no label {label}")
                    continue
                if label in TRAFFIC_DEPENDENT_LABELS:
                    continue
                if op in ("=", "!="):
                    values = [value]
                elif re.fullmatch(r"[A-Za-z0-9_/{}.-]+(\|[A-Za-z0-9_/{}.-]+)*", value):
                    values = value.split("|")
                else:
                    continue  # a real regex: nothing to compare
                for v in values:
                    if v not in exported[label]:
                        problems.append(f'{e.where}: {name} never has {label}="{v}" '
                                        f"(exported: {', '.join(sorted(exported[label]))})")

    for name in sorted(used):
        kind = "prometheus" if name in PROMETHEUS_NAMES else scrape.types.get(name, "not exported")
        print(f"  {name:<50} {kind:<11} {len(used[name])} expression(s)")

    if args.emit_rules:
        with open(args.emit_rules, "w", encoding="utf-8") as out:
            out.write("groups:\n  - name: dashboard\n    rules:\n")
            for n, e in enumerate(x for x in exprs if x.in_dashboard and not x.label):
                out.write(f"      - record: dashboard:expr_{n}\n        expr: {json.dumps(fill_variables(e.text))}\n")

    problems = list(dict.fromkeys(problems))  # one line per problem and expression
    for p in problems:
        print(f"problem: {p}", file=sys.stderr)
    print(f"{len(exprs)} expressions, {len(used)} metric names, {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
