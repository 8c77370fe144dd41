#!/usr/bin/env bash
# Alerting and dashboard checks (DESIGN §2.6):
#   - promtool check rules / promtool test rules on config/alerts/
#   - the Grafana dashboard config/grafana/aliassync.json: valid JSON, importable shape, and every PromQL
#     expression (dashboard and rules) uses only metrics aliassync exports (plus `up`)
#   - with ALIASSYNC_METRICS_URL set (e.g. http://127.0.0.1:9464/metrics of a running daemon):
#     curl it and lint the exposition with `promtool check metrics`
# promtool comes from Debian's prometheus package; tests/support/install-debs.sh installs it if missing.
# Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

RULES=config/alerts/aliassync.rules.yml
RULE_TESTS=config/alerts/aliassync.rules_test.yml
DASHBOARD=config/grafana/aliassync.json

step() { printf '\n=== %s\n' "$*"; }

if ! command -v promtool >/dev/null; then
  step "installing promtool (Debian package prometheus)"
  bash tests/support/install-debs.sh
fi
command -v promtool >/dev/null || { echo "alerts: promtool still missing after install-debs.sh" >&2; exit 1; }

step "promtool check rules $RULES"
promtool check rules "$RULES"

step "promtool test rules $RULE_TESTS"
promtool test rules "$RULE_TESTS"

step "dashboard $DASHBOARD"
python3 -m json.tool "$DASHBOARD" >/dev/null
python3 - "$DASHBOARD" "$RULES" <<'PY'
"""Dashboard shape and metric names. Metric names come from a small PromQL scan: strings, label
matchers, ranges and grouping clauses are removed; what remains that is an identifier, is not a
function call, a keyword or part of a number/duration, is a metric name."""
import json
import re
import sys

dash_path, rules_path = sys.argv[1], sys.argv[2]

HISTOGRAMS = {"aliassync_provider_request_duration_seconds", "aliassync_apply_latency_seconds"}
KNOWN = {
    "up",
    "aliassync_events_total", "aliassync_dead_letters_total", "aliassync_dead_letter_failures_total",
    "aliassync_desired_aliases",
    "aliassync_drift_aliases", "aliassync_last_scan_success_timestamp_seconds",
    "aliassync_last_scan_duration_seconds", "aliassync_scans_total", "aliassync_source_lag_events",
    "aliassync_ready", "aliassync_reconcile_total", "aliassync_provider_requests_total",
    "aliassync_queue_depth", "aliassync_target_lag_events", "aliassync_target_lag_seconds",
    "aliassync_owned_targets", "aliassync_build_info", "aliassync_rate_limit_per_second",
    "aliassync_target_paused", "aliassync_status_records_total",
    "aliassync_credentials_expiry_timestamp_seconds", "aliassync_credentials_refresh_failures_total",
} | {h + s for h in HISTOGRAMS for s in ("_bucket", "_sum", "_count")}
# Panels the dashboard must have, by the metric they show.
REQUIRED = {
    "aliassync_drift_aliases", "aliassync_desired_aliases", "aliassync_queue_depth",
    "aliassync_target_lag_events", "aliassync_target_lag_seconds", "aliassync_reconcile_total",
    "aliassync_provider_requests_total", "aliassync_provider_request_duration_seconds_bucket",
    "aliassync_dead_letters_total", "aliassync_last_scan_success_timestamp_seconds",
    "aliassync_owned_targets", "aliassync_rate_limit_per_second",
    "aliassync_apply_latency_seconds_bucket", "aliassync_status_records_total",
}
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
            "offset", "bool", "inf", "nan", "atan2"}

def metric_names(expr):
    e = re.sub(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`', '""', expr)
    e = re.sub(r"\$\{?\w+\}?", "1", e)                 # Grafana variables
    e = re.sub(r"\{[^{}]*\}", " ", e)                  # label matchers
    e = re.sub(r"\[[^\[\]]*\]", " ", e)                # ranges, subqueries
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", " ", e)
    names = set()
    for m in re.finditer(r"(?<![\w.:])[A-Za-z_:][\w:]*", e):
        word, rest = m.group(0), e[m.end():]
        if re.match(r"\s*\(", rest) or word.lower() in KEYWORDS:
            continue
        names.add(word)
    return names

# The scan must see metric names (else the checks below prove nothing).
assert metric_names('sum by (a) (rate(x_total{b="c{d}"}[5m] offset 1h)) / on (a) y > 1e3 and z') == {"x_total", "y", "z"}
assert metric_names('histogram_quantile(0.95, sum by (le) (rate(h_bucket{t=~"$target"}[$__rate_interval])))') == {"h_bucket"}

errors = []
dash = json.load(open(dash_path))
if not 36 <= dash.get("schemaVersion", 0) <= 41:
    errors.append(f"schemaVersion {dash.get('schemaVersion')} is not ~39")
if not dash.get("uid") or not dash.get("title"):
    errors.append("dashboard needs a uid and a title")
if dash.get("id") is not None:
    errors.append("dashboard id must be null for import")
if [i.get("name") for i in dash.get("__inputs", [])] != ["DS_PROMETHEUS"]:
    errors.append("__inputs must declare DS_PROMETHEUS")
variables = {v["name"]: v for v in dash.get("templating", {}).get("list", [])}
ds_var = variables.get("DS_PROMETHEUS", {})
if ds_var.get("type") != "datasource" or ds_var.get("query") != "prometheus":
    errors.append("templating needs a prometheus datasource variable DS_PROMETHEUS")
target_var = variables.get("target", {})
target_q = target_var.get("query")
target_q = target_q.get("query") if isinstance(target_q, dict) else target_q
if not (target_var.get("type") == "query" and re.fullmatch(r"label_values\(aliassync_desired_aliases(\{[^}]*\})?, *target\)", target_q or "")):
    errors.append("templating needs a target variable from label_values(aliassync_desired_aliases, target)")
exprs = [("variable target", re.sub(r"^label_values\((.*), *\w+\)$", r"\1", target_q or ""))]

ids, used = set(), set()
def walk(panels):
    for p in panels:
        where = f"panel {p.get('id')} {p.get('title')!r}"
        if p.get("id") in ids:
            errors.append(f"{where}: duplicate id")
        ids.add(p.get("id"))
        gp = p.get("gridPos", {})
        if not all(isinstance(gp.get(k), int) for k in ("h", "w", "x", "y")) or gp["x"] + gp["w"] > 24:
            errors.append(f"{where}: bad gridPos {gp}")
        if p.get("type") != "row":
            if p.get("datasource") != {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}:
                errors.append(f"{where}: datasource must be ${{DS_PROMETHEUS}}")
            if not p.get("targets"):
                errors.append(f"{where}: no queries")
            for t in p.get("targets", []):
                if t.get("datasource", p.get("datasource")) != p.get("datasource"):
                    errors.append(f"{where}: query {t.get('refId')} uses another datasource")
                if not t.get("expr"):
                    errors.append(f"{where}: query {t.get('refId')} has no expr")
                exprs.append((f"{where} {t.get('refId')}", t.get("expr", "")))
        walk(p.get("panels", []))
walk(dash.get("panels", []))
# Top-level panels must not overlap (the panels of a collapsed row are laid out when it opens: not checked).
rects = [(p.get("id"), p["gridPos"]) for p in dash.get("panels", [])
         if all(isinstance(p.get("gridPos", {}).get(k), int) for k in ("h", "w", "x", "y"))]
for i, (a, g) in enumerate(rects):
    for b, h in rects[i + 1:]:
        if g["x"] < h["x"] + h["w"] and h["x"] < g["x"] + g["w"] and g["y"] < h["y"] + h["h"] and h["y"] < g["y"] + g["h"]:
            errors.append(f"panels {a} and {b}: gridPos overlap ({g} and {h})")

for where, e in exprs:
    names = metric_names(e)
    used |= names
    for n in sorted(names - KNOWN):
        errors.append(f"{where}: unknown metric {n!r} in {e}")
for n in sorted(REQUIRED - used):
    errors.append(f"dashboard: no panel shows {n}")

# The rules' expressions: `expr: ...` on one line or a `|` block (no YAML library needed).
lines = open(rules_path).read().splitlines()
rule_exprs, i = [], 0
while i < len(lines):
    m = re.match(r"^(\s*)expr:\s*(.*)$", lines[i])
    i += 1
    if not m:
        continue
    indent, value = len(m.group(1)), m.group(2).strip()
    if value in ("|", ">", "|-", ">-"):
        block = []
        while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent):
            block.append(lines[i])
            i += 1
        value = "\n".join(block)
    rule_exprs.append(value)
if len(rule_exprs) < 10:
    errors.append(f"{rules_path}: found only {len(rule_exprs)} expressions")
for e in rule_exprs:
    for n in sorted(metric_names(e) - KNOWN):
        errors.append(f"{rules_path}: unknown metric {n!r} in {e.strip()}")

if errors:
    print("\n".join("dashboard/rules: " + e for e in errors), file=sys.stderr)
    sys.exit(1)
print(f"{dash_path}: valid JSON, {len(ids)} panels, {len(exprs)} dashboard queries, {len(rule_exprs)} rule "
      f"expressions; metrics used: {', '.join(sorted(used))}")
PY

if [[ -n ${ALIASSYNC_METRICS_URL:-} ]]; then
  step "promtool check metrics < $ALIASSYNC_METRICS_URL"
  exposition=$(curl -fsS --max-time 10 "$ALIASSYNC_METRICS_URL")
  promtool check metrics <<<"$exposition"
  echo "metrics at $ALIASSYNC_METRICS_URL pass promtool check metrics"
else
  step "promtool check metrics: skipped (set ALIASSYNC_METRICS_URL to lint a running daemon's /metrics)"
fi

step "alerts: all checks passed"
