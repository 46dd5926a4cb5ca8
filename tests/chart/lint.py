"""Lints the Helm chart with Helm's own library (helm-sdkpy) for the default values and for each
certificate mode, and fails on any error. Values are varied by editing a copy of values.yaml,
because the library's lint takes a chart path only."""

import asyncio
import pathlib
import shutil
import sys
import tempfile

import helm_sdkpy as helm

CHART = pathlib.Path(__file__).resolve().parents[2] / "charts" / "image-mirror-webhook"
SEVERITY = {0: "unknown", 1: "info", 2: "warning", 3: "error"}

CASES = {
    "default values": {},
    "certManager": {"  mode: selfManaged": "  mode: certManager"},
    "certManager with an issuer": {
        "  mode: selfManaged": "  mode: certManager",
        "    issuerRef: {}": "    issuerRef: {name: ca-issuer, kind: ClusterIssuer}",
    },
    "existingSecret": {
        "  mode: selfManaged": "  mode: existingSecret",
        '    name: ""\n    # -- Base64 PEM': "    name: my-tls\n    # -- Base64 PEM",
        '    caBundle: ""': "    caBundle: LS0tLS1CRUdJTg==",
    },
    "managed pull secrets": {"  enabled: false\n  # -- How often": "  enabled: true\n  # -- How often"},
    "failClosed, Fail, existing ConfigMap": {
        "  failClosed: false": "  failClosed: true",
        "  failurePolicy: Ignore": "  failurePolicy: Fail",
        'existingPolicyConfigMap: ""': "existingPolicyConfigMap: my-policy",
    },
}

# Values the schema must refuse: each must make lint report an error.
BROKEN = {
    "unknown certificate mode": {"  mode: selfManaged": "  mode: homemade"},
    "timeout over 30 s": {"  timeoutSeconds: 5": "  timeoutSeconds: 31"},
    "existingSecret without a name": {"  mode: selfManaged": "  mode: existingSecret"},
}


def lint(edits):
    with tempfile.TemporaryDirectory() as tmp:
        chart = pathlib.Path(tmp) / CHART.name
        shutil.copytree(CHART, chart)
        values = chart / "values.yaml"
        text = values.read_text()
        for old, new in edits.items():
            if old not in text:
                raise SystemExit(f"lint.py: the values edit {old!r} no longer matches values.yaml")
            text = text.replace(old, new)
        values.write_text(text)
        return asyncio.run(helm.Lint(helm.Configuration()).run(str(chart)))


def errors(result):
    return [m for m in result.get("Messages", []) if m.get("Severity", 0) >= 3]


def main():
    failed = 0
    for name, edits in CASES.items():
        result = lint(edits)
        bad = errors(result)
        for m in result.get("Messages", []):
            print(f"  {name}: {SEVERITY.get(m.get('Severity'), '?')} {m.get('Path')} {m.get('Err') or ''}")
        print(f"chart lint, {name}: {'FAILED' if bad else 'ok'}")
        failed += bool(bad)
    for name, edits in BROKEN.items():
        caught = bool(errors(lint(edits)))
        print(f"chart lint refuses {name}: {'ok' if caught else 'FAILED'}")
        failed += not caught
    total = len(CASES) + len(BROKEN)
    print(f"chart: {total - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
