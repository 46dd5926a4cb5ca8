"""Operations: the chart's ServiceMonitor, PrometheusRule and Grafana dashboard, checked against
Prometheus's own tools and the real binary.

- renders them with Helm's engine; `promtool check rules` on the rules and `promtool test rules`
  on tests/chart/alerts.test.yml (each alert fires on a failing series, not on a healthy one);
- starts `serve` (verify on, against a mirror on loopback that has some images, so others fall back),
  sends reviews, reloads the policy (a good one, then a bad one) and scrapes /metrics: promtool's
  metric linter passes, every metric the alerts and the dashboard query exists in the scrape, and
  the README's metrics table names exactly what the binary exports;
- the dashboard is a valid Grafana model: schema version, unique panel ids, a datasource variable
  used by every panel; every alert has a runbook section in the README.

    python3 -m tests.chart.operations PATH-TO-BINARY
"""

import http.client
import http.server
import json
import pathlib
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import yaml

from tests.chart.helmchart import Checks, one, render
from tests.chart.render import FULL, NAMESPACE, RELEASE

ROOT = pathlib.Path(__file__).resolve().parents[2]
JOB = FULL


checks = Checks()
def rendered():
    values = {"metrics": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True},
                          "dashboard": {"enabled": True}}}
    docs = render(values, RELEASE, NAMESPACE)
    off = render({}, RELEASE, NAMESPACE)
    for kind in ("ServiceMonitor", "PrometheusRule"):
        checks.check(f"no {kind} by default", one(off, kind) is None)
    checks.check("no dashboard by default", one(off, "ConfigMap", f"{JOB}-dashboard") is None)
    return docs


def service_monitor(docs):
    sm, svc = one(docs, "ServiceMonitor"), one(docs, "Service")
    if not (sm and svc):
        return checks.check("a ServiceMonitor and a Service", False)
    labels = svc["metadata"]["labels"]
    checks.check("the ServiceMonitor selects the Service",
          all(labels.get(k) == v for k, v in sm["spec"]["selector"]["matchLabels"].items()))
    ports = {p["name"] for p in svc["spec"]["ports"]}
    endpoint = sm["spec"]["endpoints"][0]
    checks.check("it scrapes the admin port over HTTP", endpoint["port"] in ports and endpoint["scheme"] == "http"
          and endpoint["path"] == "/metrics", endpoint)


def rules(docs, work):
    rule = one(docs, "PrometheusRule")
    if not rule:
        checks.check("a PrometheusRule", False)
        return []
    groups = rule["spec"]["groups"]
    (work / "rules.yml").write_text(yaml.safe_dump({"groups": groups}))
    r = subprocess.run(["promtool", "check", "rules", str(work / "rules.yml")], capture_output=True, text=True)
    checks.check("promtool check rules", r.returncode == 0, r.stdout + r.stderr)
    shutil.copy(ROOT / "tests/chart/alerts.test.yml", work / "alerts.test.yml")
    r = subprocess.run(["promtool", "test", "rules", "alerts.test.yml"], cwd=work, capture_output=True, text=True)
    checks.check("promtool test rules", r.returncode == 0, r.stdout + r.stderr)
    alerts = [x for g in groups for x in g["rules"] if "alert" in x]
    tested = (ROOT / "tests/chart/alerts.test.yml").read_text()
    readme = (ROOT / "README.md").read_text()
    for a in alerts:
        name = a["alert"]
        checks.check(f"{name}: summary and description", {"summary", "description"} <= set(a.get("annotations", {})))
        checks.check(f"{name}: a promtool test", f"alertname: {name}" in tested)
        checks.check(f"{name}: a runbook section in the README", f"#### {name}" in readme)
    return [a["expr"] for a in alerts]


def dashboard(docs):
    cm = one(docs, "ConfigMap", f"{JOB}-dashboard")
    if not cm:
        checks.check("a dashboard ConfigMap", False)
        return []
    checks.check("labelled for Grafana's sidecar", cm["metadata"]["labels"].get("grafana_dashboard") == "1")
    model = json.loads(next(iter(cm["data"].values())))
    checks.check("a schema version", isinstance(model.get("schemaVersion"), int) and model["schemaVersion"] >= 30)
    ids = [p["id"] for p in model["panels"]]
    checks.check("unique panel ids", len(ids) == len(set(ids)) and all(isinstance(i, int) for i in ids), ids)
    variables = {v["name"]: v for v in model["templating"]["list"]}
    checks.check("a datasource variable", variables.get("datasource", {}).get("type") == "datasource")
    exprs = []
    for p in model["panels"]:
        checks.check(f"panel {p['title']} uses the datasource variable", p["datasource"]["uid"] == "${datasource}")
        checks.check(f"panel {p['title']} has queries", bool(p["targets"]))
        exprs += [t["expr"] for t in p["targets"]]
    return exprs


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Registry(http.server.BaseHTTPRequestHandler):
    """A mirror that has rancher's images only: the rest fall back to their registries."""

    def do_HEAD(self):  # noqa: N802 (the handler's naming)
        self.send_response(200 if "/rancher/" in self.path else 404)
        self.end_headers()

    do_GET = do_HEAD

    def log_message(self, *args):
        pass


def scrape(binary, work):
    registry = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Registry)
    threading.Thread(target=registry.serve_forever, daemon=True).start()
    mirror = f"http://127.0.0.1:{registry.server_address[1]}"
    policy = work / "policy.yaml"
    policy.write_text(f"mirrors:\n  docker.io:\n    endpoint: [\"{mirror}\"]\nverify:\n  enabled: true\n  timeout: 1s\n")
    port, admin = free_port(), free_port()
    proc = subprocess.Popen([binary, "serve", "--listen", f"127.0.0.1:{port}", "--admin-listen", f"127.0.0.1:{admin}",
                             "--dev-cert-dir", str(work), "--policy-file", str(policy), "--reload-interval", "100ms",
                             "--max-body-bytes", "65536"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(work / "serve.log", "w"))
    try:
        base = f"http://127.0.0.1:{admin}"
        for _ in range(200):
            try:
                if urllib.request.urlopen(base + "/readyz", timeout=2).status == 200:
                    break
            except OSError:
                time.sleep(0.05)
        tls = ssl.create_default_context(cafile=str(work / "ca.crt"))
        for name in ("create", "update", "ephemeral"):
            body = (ROOT / f"tests/data/reviews/{name}.json").read_bytes()
            req = urllib.request.Request(f"https://localhost:{port}/mutate", data=body,
                                         headers={"content-type": "application/json"})
            urllib.request.urlopen(req, context=tls, timeout=10).read()
        # A body over the limit, refused on its announced length before any of it is sent: a
        # client still writing it when the answer and the close come would see a reset instead.
        conn = http.client.HTTPSConnection("localhost", port, context=tls, timeout=10)
        conn.putrequest("POST", "/mutate")
        conn.putheader("content-type", "application/json")
        conn.putheader("content-length", "70000")
        conn.endheaders()
        status = conn.getresponse().status
        conn.close()
        checks.check("an oversized body is refused with 413", status == 413, status)
        # A good reload, then a bad one (kept out; the good one stays). Written whole, by rename.
        def replace(text):
            (work / "policy.tmp").write_text(text)
            (work / "policy.tmp").rename(policy)

        def metrics_when(sample):
            for _ in range(100):
                text = urllib.request.urlopen(base + "/metrics", timeout=5).read().decode()
                if sample in text:
                    break
                time.sleep(0.1)
            return text

        replace(policy.read_text() + "annotateOriginal: false\n")
        good = metrics_when('image_mirror_policy_reloads_total{result="success"} 2')
        replace("mirrors: [not, a, map]\n")
        text = metrics_when('image_mirror_policy_reloads_total{result="failure"} 1')
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        registry.shutdown()
    (work / "metrics.txt").write_text(text)
    r = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
    checks.check("promtool's metric linter passes on a real scrape", r.returncode == 0, r.stdout + r.stderr)
    for sample, why in [('image_mirror_policy_reloads_total{result="failure"} 1', "a refused reload"),
                        ('image_mirror_policy_reloads_total{result="success"} 2', "two good loads"),
                        ("image_mirror_verify_fallbacks_total", "verify falling back")]:
        checks.check(f"the scrape shows {why}", sample in text)
    checks.check("verify fell back", not re.search(r"^image_mirror_verify_fallbacks_total 0$", text, re.M))
    checks.check("the scrape shows the policy stale", "image_mirror_policy_stale 1" in text)
    checks.check("and not before the bad edit", "image_mirror_policy_stale 0" in good)
    return good, text


def samples(text):
    """The image_mirror_* samples of a scrape, histogram buckets aside: {series: value}."""
    out = {}
    for line in text.splitlines():
        m = re.match(r"(image_mirror_[a-z_]+(?:\{[^}]*\})?) (\S+)$", line)
        if m and "_bucket" not in m.group(1):
            out[m.group(1)] = m.group(2)
    return out


def replay(work, alerts, good, bad):
    """promtool on what a real server exported: 10 minutes as before the bad edit, then 50 as after
    it, as one replica scraped by the ServiceMonitor. The stale-policy alert fires and stays; no
    other alert fires on either."""
    before, after = samples(good), samples(bad)
    labels = f'job="{JOB}",instance="replay"'
    series = [{"series": f'up{{{labels}}}', "values": "1x60"},
              {"series": f'up{{job="{JOB}",instance="replay-2"}}', "values": "1x60"}]
    for name in sorted(set(before) | set(after)):
        metric, _, rest = name.partition("{")
        full = f"{metric}{{{labels}{',' + rest.rstrip('}') if rest else ''}}}"
        series.append({"series": full, "values": f"{before.get(name, after.get(name))}x10 {after.get(name, '0')}x50"})
    quiet = [a for a in alerts if a != "ImageMirrorWebhookPolicyStale"]
    stale = {"eval_time": "40m", "alertname": "ImageMirrorWebhookPolicyStale",
             "exp_alerts": [{"exp_labels": {"severity": "warning", "instance": "replay"}, "exp_annotations": {
                 "summary": "The policy does not load; the last good one is in force",
                 "description": "replay refused the last policy offered and serves an older one."}}]}
    tests = [{"interval": "1m", "input_series": series, "alert_rule_test": [
        *({"eval_time": "8m", "alertname": a, "exp_alerts": []} for a in alerts),
        stale, *({"eval_time": "40m", "alertname": a, "exp_alerts": []} for a in quiet)]}]
    (work / "replay.test.yml").write_text(yaml.safe_dump({"rule_files": ["rules.yml"], "evaluation_interval": "1m",
                                                          "tests": tests}))
    r = subprocess.run(["promtool", "test", "rules", "replay.test.yml"], cwd=work, capture_output=True, text=True)
    checks.check("promtool on a real server's series: the stale alert fires after one refused edit, no other",
                 r.returncode == 0, r.stdout + r.stderr)


def names_used(exprs):
    return {m for e in exprs for m in re.findall(r"\b(image_mirror_[a-z_]+)\b", e)}


def main(binary):
    work = pathlib.Path(tempfile.mkdtemp(prefix="imw-ops-"))
    try:
        docs = rendered()
        service_monitor(docs)
        exprs = rules(docs, work) + dashboard(docs)
        good, text = scrape(binary, work)
        alerts = [a["alert"] for d in docs if d["kind"] == "PrometheusRule"
                  for g in d["spec"]["groups"] for a in g["rules"] if "alert" in a]
        replay(work, alerts, good, text)
        samples = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}
        for name in sorted(names_used(exprs)):
            checks.check(f"{name}, used by an alert or a panel, is in the scrape", name in samples)
        exported = set(re.findall(r"^# TYPE (image_mirror_\S+) ", text, re.M))
        process = set(re.findall(r"^# TYPE (process_\S+) ", text, re.M))
        checks.check("the standard process metrics are exported", {
            "process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds",
            "process_start_time_seconds"} <= process, process)
        readme = (ROOT / "README.md").read_text()
        section = readme.split("## Metrics", 1)[-1].split("\n## ", 1)[0]
        documented = set(re.findall(r"^\| `(image_mirror_[a-z_]+)`", section, re.M))
        checks.check("the README's metrics table names what the binary exports", documented == exported,
              {"undocumented": sorted(exported - documented), "not exported": sorted(documented - exported)})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    checks.finish("operations", "every check as expected")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
