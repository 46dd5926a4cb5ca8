"""Renders the Helm chart with Helm's own engine (helm-python-sdk) for each certificate mode and
option, and checks what the cluster would get: the webhook registration (rules, selectors that keep
the webhook off its own Pods, failure policy, side effects, the CA bundle's source), that the
Service, Deployment and webhook agree on names and ports, least-privilege RBAC, and that the
rendered arguments and policy are ones the binary accepts.

    python3 -m tests.chart.render PATH-TO-BINARY
"""

import re
import subprocess
import sys

import yaml

from tests.chart.helmchart import CHART, Checks, one, render_files
from tests.chart import helmchart

RELEASE, NAMESPACE = "imw", "mirror"
FULL = "imw-image-mirror-webhook"
SKIP = "image-mirror-webhook.io/skip"

checks = Checks()


def render(values, release=RELEASE, namespace=NAMESPACE, notes=False):
    return helmchart.render(values, release, namespace, notes)


def readme_install():
    """The README's install, as a reader runs it: its values file, release and namespace."""
    text = (CHART.parents[1] / "README.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)```", text, re.S)
    install = next(b for b in blocks if "helm install" in b)
    values = yaml.safe_load(re.search(r"<<'YAML'\n(.*?)\nYAML\n", install, re.S).group(1))
    words = re.search(r"^helm install (\S+) (\S+) .*", install, re.M).group(0).split()
    release, namespace = words[2], words[words.index("-n") + 1]
    return text, blocks, values, release, namespace


def named_resources(lines):
    """(kind, name, namespace) of every resource that kubectl lines name."""
    kinds = {"deployment": "Deployment", "configmap": "ConfigMap", "service": "Service",
             "secret": "Secret", "mutatingwebhookconfiguration": "MutatingWebhookConfiguration"}
    found = []
    for line in lines:
        # What the reader makes (`kubectl create`) is theirs, not the chart's.
        if not line.strip().startswith("kubectl") or " create " in line:
            continue
        ns = re.search(r"-n (\S+)", line)
        for kind, name in re.findall(r"\b(deployment|configmap|service|secret)[/ ]([a-z0-9][a-z0-9.-]*)", line):
            found.append((kinds[kind], name, ns.group(1) if ns else None))
        for name in re.findall(r"involvedObject\.name=([a-z0-9.-]+)", line):
            found.append((None, name, ns.group(1) if ns else None))
    return found


def readme_names_what_the_install_makes(binary):
    case = "the README's install"
    text, blocks, values, release, namespace = readme_install()
    docs, notes = render(values, release, namespace, notes=True)
    lines = [l for b in blocks for l in b.splitlines()] + notes.splitlines()
    named = named_resources(lines)
    checks.check(f"{case}: the README and NOTES.txt name resources", len(named) >= 3, named)
    for kind, name, ns in named:
        hit = [d for d in docs if d["metadata"]["name"] == name and (kind is None or d["kind"] == kind)]
        checks.check(f"{case}: {kind or 'an object'} {name} exists", len(hit) == 1, [d["kind"] for d in hit])
        if hit and ns:
            checks.check(f"{case}: {name} is in {ns}", hit[0]["metadata"].get("namespace") == ns)
    for match in re.finditer(r"helm test (\S+) -n (\S+)", "\n".join(lines)):
        checks.check(f"{case}: helm test names the release", match.groups() == (release, namespace), match.groups())
    deploy = one(docs, "Deployment")
    secret = flag(deploy["spec"]["template"]["spec"]["containers"][0]["args"], "cert-secret")
    checks.check(f"{case}: the TLS Secret the README names is the one the webhook keeps",
          f"`{str(secret).split('/')[-1]}`" in text and str(secret).startswith(f"{namespace}/"), secret)
    cm = one(docs, "ConfigMap", f"{deploy['metadata']['name']}-policy")
    checks.check(f"{case}: the ConfigMap holds the README's policy exactly",
          cm is not None and yaml.safe_load(cm["data"]["policy.yaml"]) == values["policy"])


def policies_arrive_as_given(binary):
    case = "a user policy naming only quay.io"
    mine = {"mirrors": {"quay.io": {"endpoint": ["https://quay-mirror.example.com"]}}}
    cm = one(render({"policy": mine}), "ConfigMap", f"{FULL}-policy")
    checks.check(f"{case}: the ConfigMap holds exactly that policy", yaml.safe_load(cm["data"]["policy.yaml"]) == mine,
          cm["data"]["policy.yaml"])
    case = "a policy given as text"
    text = "# ours\nmirrors:\n  quay.io:\n    endpoint: [\"https://q.example.com\"]\n"
    cm = one(render({"policy": text}), "ConfigMap", f"{FULL}-policy")
    checks.check(f"{case}: the ConfigMap holds the text verbatim", cm["data"]["policy.yaml"] == text, cm["data"]["policy.yaml"])
    case = "no policy given"
    cm = one(render({}), "ConfigMap", f"{FULL}-policy")
    r = subprocess.run([binary, "check", "--policy-file", "-"], input=cm["data"]["policy.yaml"],
                       capture_output=True, text=True)
    checks.check(f"{case}: check says nothing is rewritten", "no image will be rewritten" in r.stdout, r.stdout)
    case = "fullnameOverride and a release named like the chart"
    names = {d["metadata"]["name"] for d in render({"fullnameOverride": "mirrors"}) if d["kind"] == "Deployment"}
    checks.check(f"{case}: fullnameOverride names the resources", names == {"mirrors"}, names)
    names = {d["metadata"]["name"] for d in render({}, release="image-mirror-webhook") if d["kind"] == "Deployment"}
    checks.check(f"{case}: a release containing the chart's name is not doubled", names == {"image-mirror-webhook"}, names)


def flag(args, name):
    """The value of --name=value among args; True for a bare --name; None when absent."""
    for a in args:
        if a == f"--{name}":
            return True
        if a.startswith(f"--{name}="):
            return a.split("=", 1)[1]
    return None


def common(case, docs, binary):
    mwc = one(docs, "MutatingWebhookConfiguration")
    deploy = one(docs, "Deployment")
    service = one(docs, "Service")
    if not (mwc and deploy and service):
        checks.check(f"{case}: one MutatingWebhookConfiguration, Deployment and Service", False)
        return None, None, None
    hook = mwc["webhooks"][0]
    checks.check(f"{case}: admissionReviewVersions [v1]", hook["admissionReviewVersions"] == ["v1"])
    checks.check(f"{case}: sideEffects NoneOnDryRun", hook["sideEffects"] == "NoneOnDryRun")
    checks.check(f"{case}: reinvocationPolicy IfNeeded", hook.get("reinvocationPolicy") == "IfNeeded")
    rules = {(tuple(r["operations"]), tuple(r["resources"])) for r in hook["rules"]}
    checks.check(f"{case}: rules: pods CREATE, pods/ephemeralcontainers UPDATE",
          rules == {(("CREATE",), ("pods",)), (("UPDATE",), ("pods/ephemeralcontainers",))}, rules)
    svc = hook["clientConfig"]["service"]
    checks.check(f"{case}: clientConfig names the Service", (svc["name"], svc["namespace"], svc["path"]) ==
          (service["metadata"]["name"], NAMESPACE, "/mutate"), svc)
    port = next((p for p in service["spec"]["ports"] if p["port"] == svc["port"]), None)
    container = deploy["spec"]["template"]["spec"]["containers"][0]
    names = {p["name"]: p["containerPort"] for p in container["ports"]}
    checks.check(f"{case}: the webhook port reaches the container's https port",
          port is not None and port["targetPort"] == "https" and "https" in names, port)
    checks.check(f"{case}: https port is the --listen port",
          str(names.get("https")) == str(flag(container["args"], "listen")).rsplit(":", 1)[-1])
    checks.check(f"{case}: admin port is the --admin-listen port",
          str(names.get("admin")) == str(flag(container["args"], "admin-listen")).rsplit(":", 1)[-1])
    scrape = deploy["spec"]["template"]["metadata"].get("annotations", {}).get("prometheus.io/port")
    checks.check(f"{case}: pods are scraped on the admin port", scrape in (None, str(names.get("admin"))), scrape)
    admin = next((p for p in service["spec"]["ports"] if p["name"] == "admin"), None)
    checks.check(f"{case}: the Service's admin port reaches the container's", admin is not None
          and admin["targetPort"] == "admin", admin)
    account = deploy["spec"]["template"]["spec"]["serviceAccountName"]
    subjects = [s for d in docs if d["kind"] in ("RoleBinding", "ClusterRoleBinding") for s in d["subjects"]]
    checks.check(f"{case}: every binding is to the Pods' ServiceAccount",
          subjects and all(s["name"] == account and s["namespace"] == NAMESPACE for s in subjects), subjects)
    pod_labels = deploy["spec"]["template"]["metadata"]["labels"]
    checks.check(f"{case}: Service selects the Deployment's Pods",
          all(pod_labels.get(k) == v for k, v in service["spec"]["selector"].items()))
    checks.check(f"{case}: the webhook's own Pods carry the skip label", pod_labels.get(SKIP) == "true")
    ns_exprs = hook["namespaceSelector"]["matchExpressions"]
    checks.check(f"{case}: the release namespace is excluded", any(
        e["key"] == "kubernetes.io/metadata.name" and e["operator"] == "NotIn" and NAMESPACE in e["values"]
        for e in ns_exprs), ns_exprs)
    obj_exprs = hook["objectSelector"]["matchExpressions"]
    checks.check(f"{case}: Pods with the skip label are not sent",
          {"key": SKIP, "operator": "NotIn", "values": ["true"]} in obj_exprs, obj_exprs)

    # The binary accepts the rendered arguments (clap stops at --help only once all parsed).
    args = container["args"]
    r = subprocess.run([binary, *args, "--help"], capture_output=True, text=True)
    checks.check(f"{case}: the binary accepts {args}", r.returncode == 0, r.stderr.strip())
    # The policy ConfigMap the Deployment watches exists (or is the user's) and passes `check`.
    cm_ref = flag(args, "policy-configmap")
    checks.check(f"{case}: --policy-configmap is in the release namespace",
          isinstance(cm_ref, str) and cm_ref.startswith(f"{NAMESPACE}/"), cm_ref)
    cm_name = str(cm_ref).split("/", 1)[-1]
    role = one(docs, "Role")
    cm_rules = [r for r in role["rules"] if "configmaps" in r["resources"]]
    checks.check(f"{case}: the Role reads only the policy ConfigMap",
          len(cm_rules) == 1 and cm_rules[0]["resourceNames"] == [cm_name]
          and sorted(cm_rules[0]["verbs"]) == ["get", "list", "watch"], cm_rules)
    cm = one(docs, "ConfigMap", cm_name)
    if cm is not None:
        r = subprocess.run([binary, "check", "--policy-file", "-"], input=cm["data"]["policy.yaml"],
                           capture_output=True, text=True)
        checks.check(f"{case}: the rendered policy passes `check`", r.returncode == 0, r.stdout + r.stderr)
    return hook, container, deploy


def main(binary):
    # Defaults: self-managed certificates, Ignore, the chart's policy.
    case = "default values"
    docs = render({})
    hook, c, deploy = common(case, docs, binary)
    if hook:
        checks.check(f"{case}: failurePolicy Ignore", hook["failurePolicy"] == "Ignore")
        checks.check(f"{case}: no caBundle in the chart: the webhook writes it", "caBundle" not in hook["clientConfig"])
        checks.check(f"{case}: --webhook-configuration names the MutatingWebhookConfiguration",
              flag(c["args"], "webhook-configuration") == FULL)
        checks.check(f"{case}: --cert-secret in the release namespace",
              flag(c["args"], "cert-secret") == f"{NAMESPACE}/{FULL}-tls")
        dns = str(flag(c["args"], "cert-dns-names")).split(",")
        checks.check(f"{case}: the certificate covers the Service's DNS name", f"{FULL}.{NAMESPACE}.svc" in dns, dns)
        cluster = one(docs, "ClusterRole", FULL)
        checks.check(f"{case}: the ClusterRole patches only this webhook configuration",
              cluster is not None and all(r.get("resourceNames") == [FULL] for r in cluster["rules"]),
              cluster and cluster["rules"])
        checks.check(f"{case}: no Secret access cluster-wide without pullSecrets",
              one(docs, "ClusterRole", f"{FULL}-pull-secrets") is None)
        checks.check(f"{case}: no mirror set access without imageMirrorSets.watch",
              one(docs, "ClusterRole", f"{FULL}-mirror-sets") is None
              and flag(c["args"], "watch-image-mirror-sets") is None)
        checks.check(f"{case}: not fail-closed", flag(c["args"], "fail-closed") is None)
        checks.check(f"{case}: a PodDisruptionBudget", one(docs, "PodDisruptionBudget") is not None)

    # One replica: no budget, or no node with it could ever be drained.
    case = "one replica"
    docs = render({"replicaCount": 1})
    common(case, docs, binary)
    checks.check(f"{case}: no PodDisruptionBudget", one(docs, "PodDisruptionBudget") is None)
    case = "PodDisruptionBudget disabled"
    docs = render({"podDisruptionBudget": {"enabled": False}})
    checks.check(f"{case}: no PodDisruptionBudget", one(docs, "PodDisruptionBudget") is None)

    # Control planes that reach only node IPs (EKS with a custom CNI): the node's network, on
    # ports of the user's choosing, the Service and probes following.
    case = "hostNetwork with other ports"
    docs = render({"hostNetwork": True, "ports": {"webhook": 10443, "admin": 10080}})
    hook, c, deploy = common(case, docs, binary)
    if hook:
        spec = deploy["spec"]["template"]["spec"]
        checks.check(f"{case}: on the host network, with the cluster's DNS",
                     spec.get("hostNetwork") is True and spec.get("dnsPolicy") == "ClusterFirstWithHostNet", spec)
        checks.check(f"{case}: listens on the chosen ports", (flag(c["args"], "listen"), flag(c["args"], "admin-listen"))
                     == ("0.0.0.0:10443", "0.0.0.0:10080"), c["args"])
        test = "\n".join(t for n, t in render_files({"ports": {"admin": 10080}}, RELEASE, NAMESPACE).items()
                         if "/tests/" in n)
        checks.check(f"{case}: helm test asks the admin port", f":10080/readyz" in test, test)
    docs = render({})
    checks.check("defaults: not on the host network", "hostNetwork" not in
                 one(docs, "Deployment")["spec"]["template"]["spec"])

    case = "an existing ServiceAccount"
    docs = render({"serviceAccount": {"create": False, "name": "platform-webhooks"}})
    hook, c, deploy = common(case, docs, binary)
    if hook:
        checks.check(f"{case}: none is made", one(docs, "ServiceAccount") is None)
        checks.check(f"{case}: the Pods run as it",
                     deploy["spec"]["template"]["spec"]["serviceAccountName"] == "platform-webhooks")
    try:
        render({"serviceAccount": {"create": False}})
        checks.check(f"{case}: refused without a name", False)
    except Exception as e:  # noqa: BLE001 (the binding raises its own error type)
        checks.check(f"{case}: refused without a name, saying so", "serviceAccount.name is required" in str(e), str(e))
    docs = render({"serviceAccount": {"name": "imw-runner"}})
    checks.check("a named ServiceAccount is made under that name",
                 one(docs, "ServiceAccount", "imw-runner") is not None)

    # Alert rules select the webhook's series as the chosen scrape labels them: the ServiceMonitor's
    # job, or what the user says pod-annotation scraping gives; never a job no scrape makes.
    case = "alerts with pod-annotation scraping"
    try:
        render({"metrics": {"prometheusRule": {"enabled": True}}})
        checks.check(f"{case}: refused without a selector", False)
    except Exception as e:  # noqa: BLE001 (the binding raises its own error type)
        checks.check(f"{case}: refused without a selector, saying how to give one",
                     "metrics.prometheusRule.selector" in str(e) and "metrics.serviceMonitor" in str(e), str(e))
    sel = 'job="kubernetes-pods",namespace="mirror"'
    docs = render({"metrics": {"prometheusRule": {"enabled": True, "selector": sel}}})
    exprs = [r["expr"] for g in one(docs, "PrometheusRule")["spec"]["groups"] for r in g["rules"]]
    checks.check(f"{case}: every rule selects by the selector given",
                 all(sel in e for e in exprs if "image_mirror_" in e or "up{" in e) and not any(FULL in e for e in exprs),
                 exprs)
    docs = render({"metrics": {"prometheusRule": {"enabled": True}, "serviceMonitor": {"enabled": True}}})
    exprs = [r["expr"] for g in one(docs, "PrometheusRule")["spec"]["groups"] for r in g["rules"]]
    checks.check("alerts with a ServiceMonitor: they select its job",
                 all(f'job="{FULL}"' in e for e in exprs if "image_mirror_" in e), exprs)

    # NOTES.txt says what the values chose.
    case = "NOTES"
    _, notes = render({}, notes=True)
    checks.check(f"{case}: an empty policy is named", "The policy is empty" in notes, notes)
    checks.check(f"{case}: failing open is not called closed", "fails closed" not in notes, notes)
    _, notes = render({"policy": {"mirrors": {"docker.io": {"endpoint": ["https://m.example.com"]}}},
                       "webhook": {"failClosed": True}, "pullSecrets": {"enabled": True}}, notes=True)
    checks.check(f"{case}: a policy given is not called empty", "The policy is empty" not in notes, notes)
    checks.check(f"{case}: failing closed says Pods are denied", "fails closed (webhook.failClosed)" in notes, notes)
    checks.check(f"{case}: managed pull secrets are named", "Pull secrets are managed" in notes, notes)
    _, notes = render({"clientAuth": {"caCert": "LS0tLS1CRUdJTg=="}}, notes=True)
    checks.check(f"{case}: with client authentication, no dry-run a client cannot make",
                 "port-forward" not in notes and "Client authentication is on" in notes, notes)

    # `helm show readme`: the chart's README names every top-level value.
    readme = (CHART / "README.md").read_text()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    table = " ".join(re.findall(r"^\| (.*?) \|", readme, re.M))
    missing = [k for k in values if f"`{k}`" not in table]
    ours = re.search(r"<<'YAML'\n(.*?)\nYAML\n", readme, re.S)
    checks.check("chart README: its install gives the values the project README's does (tested above)",
                 ours and yaml.safe_load(ours.group(1)) == readme_install()[2])
    checks.check("chart README: its values table names every top-level value", not missing, missing)

    # `helm test`: every request has its own time limit, so a NetworkPolicy that drops the test
    # Pod's traffic fails the test in seconds instead of at Helm's timeout.
    case = "helm test"
    out = render_files({}, RELEASE, NAMESPACE)
    script = "\n".join(t for n, t in out.items() if "/tests/" in n)
    curls = re.findall(r"\bcurl\s+-[^\n|;]*", script)
    checks.check(f"{case}: the test Pod makes requests", len(curls) >= 2, curls)
    checks.check(f"{case}: each with a time limit", all("--max-time" in c for c in curls), curls)

    case = "certManager"
    docs = render({"certificates": {"mode": "certManager"}})
    hook, c, deploy = common(case, docs, binary)
    if hook:
        mwc = one(docs, "MutatingWebhookConfiguration")
        cert = one(docs, "Certificate")
        checks.check(f"{case}: cert-manager injects the Certificate's CA",
              cert is not None and mwc["metadata"].get("annotations", {}).get("cert-manager.io/inject-ca-from")
              == f"{NAMESPACE}/{cert['metadata']['name']}")
        checks.check(f"{case}: a self-signed Issuer when none is given", one(docs, "Issuer") is not None)
        secret = cert["spec"]["secretName"] if cert else None
        volumes = deploy["spec"]["template"]["spec"].get("volumes", [])
        checks.check(f"{case}: the Deployment mounts the Certificate's Secret",
              any(v.get("secret", {}).get("secretName") == secret for v in volumes), volumes)
        checks.check(f"{case}: serves the mounted pair",
              flag(c["args"], "tls-cert") == "/tls/tls.crt" and flag(c["args"], "tls-key") == "/tls/tls.key")
        checks.check(f"{case}: no self-managed flags", flag(c["args"], "cert-secret") is None)

    case = "certManager with an issuer"
    docs = render({"certificates": {"mode": "certManager",
                                    "certManager": {"issuerRef": {"name": "ca", "kind": "ClusterIssuer"}}}})
    common(case, docs, binary)
    cert = one(docs, "Certificate")
    checks.check(f"{case}: the given issuer is used", cert is not None and cert["spec"]["issuerRef"]["name"] == "ca")
    checks.check(f"{case}: no Issuer of its own", one(docs, "Issuer") is None)

    case = "existingSecret"
    docs = render({"certificates": {"mode": "existingSecret",
                                    "existingSecret": {"name": "my-tls", "caBundle": "QUJD"}}})
    hook, c, deploy = common(case, docs, binary)
    if hook:
        checks.check(f"{case}: the given caBundle", hook["clientConfig"].get("caBundle") == "QUJD")
        volumes = deploy["spec"]["template"]["spec"].get("volumes", [])
        checks.check(f"{case}: mounts the given Secret",
              any(v.get("secret", {}).get("secretName") == "my-tls" for v in volumes), volumes)

    case = "pull secrets, fail closed, Fail, existing ConfigMap"
    docs = render({"pullSecrets": {"enabled": True},
                   "webhook": {"failClosed": True, "failurePolicy": "Fail"},
                   "existingPolicyConfigMap": "my-policy"})
    hook, c, deploy = common(case, docs, binary)
    if hook:
        checks.check(f"{case}: failurePolicy Fail", hook["failurePolicy"] == "Fail")
        checks.check(f"{case}: --fail-closed", flag(c["args"], "fail-closed") is True)
        checks.check(f"{case}: --pull-secrets", flag(c["args"], "pull-secrets") is True)
        checks.check(f"{case}: watches the user's ConfigMap",
              flag(c["args"], "policy-configmap") == f"{NAMESPACE}/my-policy")
        checks.check(f"{case}: renders no ConfigMap of its own", one(docs, "ConfigMap") is None)
        role = one(docs, "ClusterRole", f"{FULL}-pull-secrets")
        verbs = sorted(role["rules"][0]["verbs"]) if role else None
        checks.check(f"{case}: Secrets: get, list, watch, create, update; never delete or patch",
              verbs == ["create", "get", "list", "update", "watch"], verbs)

    case = "the cluster's mirror sets watched"
    docs = render({"imageMirrorSets": {"watch": True}})
    hook, c, deploy = common(case, docs, binary)
    if hook:
        checks.check(f"{case}: --watch-image-mirror-sets", flag(c["args"], "watch-image-mirror-sets") is True)
        role = one(docs, "ClusterRole", f"{FULL}-mirror-sets")
        rules = {(g, r): sorted(rule["verbs"]) for rule in (role or {}).get("rules", [])
                 for g in rule["apiGroups"] for r in rule["resources"]}
        want = {("config.openshift.io", "imagedigestmirrorsets"): ["get", "list", "watch"],
                ("config.openshift.io", "imagetagmirrorsets"): ["get", "list", "watch"],
                ("operator.openshift.io", "imagecontentsourcepolicies"): ["get", "list", "watch"]}
        checks.check(f"{case}: read-only access to the three kinds, nothing else", rules == want, rules)
        binding = one(docs, "ClusterRoleBinding", f"{FULL}-mirror-sets")
        checks.check(f"{case}: bound to the chart's ServiceAccount",
              binding is not None and binding["subjects"][0]["name"] == deploy["spec"]["template"]["spec"]["serviceAccountName"],
              binding)

    case = "the user's selectors are kept"
    docs = render({"webhook": {"namespaceSelector": {"matchLabels": {"mirror": "on"}},
                               "objectSelector": {"matchExpressions": [
                                   {"key": "tier", "operator": "In", "values": ["web"]}]}}})
    hook, _, _ = common(case, docs, binary)
    if hook:
        checks.check(f"{case}: namespace matchLabels kept",
              hook["namespaceSelector"].get("matchLabels") == {"mirror": "on"}, hook["namespaceSelector"])
        checks.check(f"{case}: object expressions kept", {"key": "tier", "operator": "In", "values": ["web"]}
              in hook["objectSelector"]["matchExpressions"], hook["objectSelector"])

    case = "a policy with verify and KCI"
    docs = render({"policy": {"mirrors": {"docker.io": {"endpoint": ["https://m.example.com"]}},
                              "verify": {"enabled": True, "timeout": "500ms"},
                              "kci": {"enabled": "auto"}}})
    common(case, docs, binary)

    case = "limits, client authentication and a NetworkPolicy"
    api_servers = [{"ipBlock": {"cidr": "10.0.0.0/24"}}]
    docs = render({"limits": {"maxConnections": 64, "idleTimeout": "150s", "maxBodiesBytes": 33554432},
                   "clientAuth": {"caCert": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----"},
                   "networkPolicy": {"enabled": True, "webhookFrom": api_servers}})
    hook, c, deploy = common(case, docs, binary)
    if hook:
        checks.check(f"{case}: limits reach the flags",
              (flag(c["args"], "max-connections"), flag(c["args"], "idle-timeout"),
               flag(c["args"], "max-bodies-bytes")) == ("64", "150s", "33554432"), c["args"])
        ca_file = flag(c["args"], "client-ca-file")
        cm = one(docs, "ConfigMap", f"{FULL}-client-ca")
        checks.check(f"{case}: the client CA is rendered into a ConfigMap", cm is not None and "BEGIN" in cm["data"]["ca.crt"])
        mounts = {m["name"]: m["mountPath"] for m in c.get("volumeMounts", [])}
        volumes = {v["name"]: v for v in deploy["spec"]["template"]["spec"].get("volumes", [])}
        checks.check(f"{case}: --client-ca-file is the mounted ConfigMap's ca.crt",
              ca_file == f"{mounts.get('client-ca')}/ca.crt"
              and volumes.get("client-ca", {}).get("configMap", {}).get("name") == f"{FULL}-client-ca",
              (ca_file, mounts, volumes))
        probes = [c["readinessProbe"]["httpGet"]["port"], c["livenessProbe"]["httpGet"]["port"]]
        checks.check(f"{case}: probes use the admin port, which needs no client certificate", probes == ["admin", "admin"])
        np = one(docs, "NetworkPolicy")
        rules = np["spec"]["ingress"] if np else []
        webhook_rule = next((r for r in rules if r["ports"] == [{"port": "https"}]), None)
        checks.check(f"{case}: only the given sources reach the webhook port",
              webhook_rule is not None and webhook_rule.get("from") == api_servers, rules)
        checks.check(f"{case}: the NetworkPolicy selects the webhook's Pods",
              np is not None and all(deploy["spec"]["template"]["metadata"]["labels"].get(k) == v
                                     for k, v in np["spec"]["podSelector"]["matchLabels"].items()))
    try:
        render({"networkPolicy": {"enabled": True}})
        checks.check("NetworkPolicy without sources: refused", False)
    except Exception as e:  # Helm's `required` fails the render.
        checks.check("NetworkPolicy without sources: says what is missing", "webhookFrom" in str(e), str(e))

    case = "Pod settings and kube-system"
    docs = render({"priorityClassName": "system-cluster-critical", "podLabels": {"team": "platform"},
                   "commonLabels": {"cost": "infra"}, "webhook": {"skipKubeSystem": True},
                   "securityContext": {"readOnlyRootFilesystem": True, "runAsUser": 1000}})
    hook, c, deploy = common(case, docs, binary)
    if hook:
        pod = deploy["spec"]["template"]
        checks.check(f"{case}: priorityClassName", pod["spec"].get("priorityClassName") == "system-cluster-critical")
        checks.check(f"{case}: podLabels", pod["metadata"]["labels"].get("team") == "platform")
        checks.check(f"{case}: commonLabels on every resource", all(d["metadata"]["labels"].get("cost") == "infra" for d in docs))
        checks.check(f"{case}: the container's securityContext, over the hardened defaults",
              c["securityContext"].get("runAsUser") == 1000
              and c["securityContext"].get("allowPrivilegeEscalation") is False, c["securityContext"])
        names = next(e for e in hook["namespaceSelector"]["matchExpressions"] if e["key"] == "kubernetes.io/metadata.name")
        checks.check(f"{case}: kube-system is not sent", names["values"] == [NAMESPACE, "kube-system"], names)
    hook, _, deploy = common("defaults keep the hardened Pod", render({}), binary)
    if hook:
        pod = deploy["spec"]["template"]["spec"]
        checks.check("defaults: non-root, read-only root, no capabilities",
              pod["securityContext"].get("runAsNonRoot") is True
              and pod["containers"][0]["securityContext"].get("readOnlyRootFilesystem") is True
              and pod["containers"][0]["securityContext"]["capabilities"]["drop"] == ["ALL"])

    readme_names_what_the_install_makes(binary)
    policies_arrive_as_given(binary)

    checks.finish("chart render", "every case as expected")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
