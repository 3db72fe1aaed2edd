#!/usr/bin/env bash
# Checks the Prometheus rules of deploy/prometheus, runs their promtool unit tests, and checks the
# Grafana dashboards of deploy/grafana (valid JSON, schemaVersion >= 36, every PromQL expression
# accepted by promtool, every recorded series they read defined in the rules). `make alerts-test`
# runs it; so does CI.
#
# promtool comes from Debian's prometheus package. When it is missing and this runs as root (or
# can use sudo without a password), the package is installed; otherwise the script says so and
# fails. Note that on a machine running systemd the package also enables the Prometheus server.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v promtool >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ]; then
    sudo=()
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo=(sudo -n)
  else
    echo "promtool-test: promtool not found; install Debian's prometheus package (apt-get install prometheus)" >&2
    exit 1
  fi
  echo "promtool-test: promtool not found, installing Debian's prometheus package"
  export DEBIAN_FRONTEND=noninteractive
  # The package lists may be missing or stale on a fresh machine: refresh them only if needed.
  if ! "${sudo[@]}" apt-get install -y --no-install-recommends prometheus; then
    "${sudo[@]}" apt-get update
    "${sudo[@]}" apt-get install -y --no-install-recommends prometheus
  fi
fi
promtool --version 2>&1 | head -n 1

echo "promtool-test: checking rules"
promtool check rules deploy/prometheus/rules/*.yml

echo "promtool-test: unit tests of the rules"
promtool test rules deploy/prometheus/tests/*.test.yml

echo "promtool-test: checking dashboards"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# Python (Debian's python3) reads the JSON and writes every query of every dashboard, with the
# Grafana variables replaced by plausible values, as a recording rule that promtool then parses.
python3 - "$tmp/dashboard-queries.yml" deploy/prometheus/rules/*.yml deploy/grafana/*.json <<'PY'
import json, re, sys

out, paths = sys.argv[1], sys.argv[2:]
rules = [p for p in paths if p.endswith(".yml")]
dashboards = [p for p in paths if p.endswith(".json")]
recorded = set()
for p in rules:
    recorded.update(re.findall(r"^\s*-\s*record:\s*(\S+)", open(p).read(), re.M))

# Grafana's variables, as the data source would see them once substituted.
values = {"__rate_interval": "5m", "__interval": "1m", "__range": "6h", "__range_s": "21600"}

def substitute(expr):
    def one(m):
        name = m.group(1) or m.group(2)
        return values.get(name, ".*")
    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", one, expr)

def walk(panels):
    for p in panels:
        yield p
        yield from walk(p.get("panels", []))

errors, queries = [], []
for path in dashboards:
    try:
        d = json.load(open(path))
    except ValueError as e:
        errors.append(f"{path}: not valid JSON: {e}")
        continue
    if d.get("schemaVersion", 0) < 36:
        errors.append(f"{path}: schemaVersion {d.get('schemaVersion')} < 36")
    ids = [p["id"] for p in walk(d.get("panels", [])) if "id" in p]
    if len(ids) != len(set(ids)):
        errors.append(f"{path}: duplicate panel ids")
    exprs = []
    for p in walk(d.get("panels", [])):
        for t in p.get("targets", []):
            if "expr" in t:
                exprs.append((f"panel {p.get('id')} ({p.get('title')})", t["expr"]))
    for a in d.get("annotations", {}).get("list", []):
        if "expr" in a:
            exprs.append((f"annotation {a.get('name')}", a["expr"]))
    for v in d.get("templating", {}).get("list", []):
        q = v.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        if v.get("type") == "query" and q:
            m = re.fullmatch(r"\s*label_values\((.*),\s*\w+\)\s*", q, re.S)
            if m:
                exprs.append((f"variable {v.get('name')}", m.group(1)))
    if not exprs:
        errors.append(f"{path}: no queries")
    for where, expr in exprs:
        for name in re.findall(r"[A-Za-z_][A-Za-z0-9_]*:[A-Za-z0-9_:]+", expr):
            if name not in recorded:
                errors.append(f"{path}: {where} reads {name}, which no recording rule defines")
        queries.append((f"{path}: {where}", substitute(expr)))

if errors:
    print("\n".join(errors), file=sys.stderr)
    sys.exit(1)
with open(out, "w") as f:
    f.write("groups:\n  - name: dashboard-queries\n    rules:\n")
    for i, (where, expr) in enumerate(queries):
        f.write(f"      # {where}\n      - record: dashboard_query_{i}\n        expr: {json.dumps(expr)}\n")
print(f"promtool-test: {len(queries)} dashboard queries in {len(dashboards)} dashboard(s)")
PY
promtool check rules "$tmp/dashboard-queries.yml"
echo "promtool-test: ok"
