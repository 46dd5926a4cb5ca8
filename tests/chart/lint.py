"""Lints the Helm chart with Helm's own library (helm-python-sdk), strictly (warnings fail too), for
the default values and each certificate mode and option; and confirms the values schema refuses
what it must."""

import sys

import helm_python as helm

from tests.chart.helmchart import CHART
SEVERITY = {0: "unknown", 1: "info", 2: "warning", 3: "error"}

CASES = {
    "default values": {},
    "certManager": {"certificates": {"mode": "certManager"}},
    "certManager with an issuer": {
        "certificates": {"mode": "certManager",
                         "certManager": {"issuerRef": {"name": "ca-issuer", "kind": "ClusterIssuer"}}},
    },
    "existingSecret": {
        "certificates": {"mode": "existingSecret",
                         "existingSecret": {"name": "my-tls", "caBundle": "LS0tLS1CRUdJTg=="}},
    },
    "managed pull secrets": {"pullSecrets": {"enabled": True}},
    "credential provider plugins": {
        "pullSecrets": {"enabled": True},
        "credentialProviders": {"volume": {"hostPath": {"path": "/etc/eks/image-credential-provider"}}},
    },
    "failClosed, Fail, existing ConfigMap": {
        "webhook": {"failClosed": True, "failurePolicy": "Fail"},
        "existingPolicyConfigMap": "my-policy",
    },
    "ServiceMonitor, PrometheusRule, dashboard, client CA, NetworkPolicy": {
        "metrics": {"serviceMonitor": {"enabled": True}, "dashboard": {"enabled": True},
                    "prometheusRule": {"enabled": True, "runbookBaseUrl": "https://example.com/README.md"}},
        "clientAuth": {"caCert": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----"},
        "networkPolicy": {"enabled": True, "webhookFrom": [{"ipBlock": {"cidr": "10.0.0.0/24"}}]},
    },
}

# Values the schema must refuse: each must make lint report an error.
BROKEN = {
    "unknown certificate mode": {"certificates": {"mode": "homemade"}},
    "timeout over 30 s": {"webhook": {"timeoutSeconds": 31}},
    "existingSecret without a name": {"certificates": {"mode": "existingSecret"}},
    "an unknown top-level key": {"replicas": 3},
}


def lint(values):
    return helm.lint(str(CHART), values, strict=True)


def errors(result):
    return [m for m in result.get("messages", []) if m.get("severity", 0) >= 2]


def main():
    failed = 0
    for name, values in CASES.items():
        result = lint(values)
        bad = errors(result)
        for m in result.get("messages", []):
            print(f"  {name}: {SEVERITY.get(m.get('severity'), '?')} {m.get('path')} {m.get('error') or ''}")
        print(f"chart lint, {name}: {'FAILED' if bad else 'ok'}")
        failed += bool(bad)
    for name, values in BROKEN.items():
        caught = bool(errors(lint(values)))
        print(f"chart lint refuses {name}: {'ok' if caught else 'FAILED'}")
        failed += not caught
    total = len(CASES) + len(BROKEN)
    print(f"chart: {total - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
