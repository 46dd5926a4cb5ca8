"""End-to-end tests against a real control plane (cluster.sh): kube-apiserver sends the reviews,
the controller manager makes the Pods of Deployments and Jobs, and the chart's own RBAC,
ServiceAccount, ConfigMap and MutatingWebhookConfiguration are applied as rendered. The webhook
runs as a local process with the Deployment's own arguments, as the chart's ServiceAccount (a token
from the TokenRequest API); its clientConfig points at https://localhost:PORT/mutate, since a
Service needs a kube-proxy.

    python3 -m tests.cluster.e2e PATH-TO-BINARY   (from the repository root)
"""

import base64
import json
import os
import pathlib
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import yaml

from tests.chart.helmchart import Checks, render as render_chart

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
BIN = pathlib.Path(os.environ.get("CLUSTER_BIN", ROOT / "target" / "cluster" / "bin"))
RELEASE, NAMESPACE = "imw", "image-mirror"
FULL = f"{RELEASE}-image-mirror-webhook"
MIRROR = "mirror.example.com:5000"
OTHER = "other.example.com"
SKIP = "image-mirror-webhook.io/skip"

# The README's install: the mirror's credentials in a Secret of the webhook's namespace, and
# managed pull secrets on.
POLICY = {
    "mirrors": {"docker.io": {"endpoint": [f"https://{MIRROR}"]}},
    "configs": {MIRROR: {"credentialsSecret": "mirror-credentials"}},
}
PASSWORD = "e2e-Pa55"

checks = Checks(verbose=True)
check = checks.check


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait(what, ok, timeout=60, every=0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if ok():
                return True
        except (subprocess.CalledProcessError, OSError, KeyError, IndexError, ValueError):
            pass
        time.sleep(every)
    print(f"timed out waiting for {what}", flush=True)
    return False


class Cluster:
    def __init__(self, directory):
        self.dir = pathlib.Path(directory)
        self.kubeconfig = self.dir / "kubeconfig"
        self.port = int((self.dir / "port").read_text())

    def kubectl(self, *args, stdin=None, ok=True, timeout=60):
        out = subprocess.run([str(BIN / "kubectl"), "--kubeconfig", str(self.kubeconfig), *args],
                             input=stdin, capture_output=True, text=True, timeout=timeout)
        if ok and out.returncode != 0:
            raise subprocess.CalledProcessError(out.returncode, args, out.stdout, out.stderr)
        return out

    def json(self, *args):
        return json.loads(self.kubectl(*args, "-o", "json").stdout)

    def apply(self, docs):
        self.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(docs))

    def pod_images(self, ns, name):
        spec = self.json("get", "pod", "-n", ns, name)["spec"]
        return {c["name"]: c["image"] for key in ("initContainers", "containers", "ephemeralContainers")
                for c in spec.get(key, [])}

    def namespace(self, name):
        """A new namespace, once its default ServiceAccount (which admission needs for every Pod,
        and the controller manager makes) is there."""
        self.kubectl("create", "namespace", name)
        wait(f"the default ServiceAccount in {name}",
             lambda: self.kubectl("get", "sa", "default", "-n", name, ok=False).returncode == 0, 60)

    def first_pod(self, ns, selector):
        items = self.json("get", "pods", "-n", ns, "-l", selector)["items"]
        return items[0]["metadata"]["name"] if items else None


def render(values):
    return render_chart(values, RELEASE, NAMESPACE)


class Webhook:
    """The binary, run with the rendered Deployment's arguments as the chart's ServiceAccount."""

    def __init__(self, binary, cluster, deployment, port=None, **flags):
        """`flags` (as `cert_validity="90s"`) replace the Deployment's or are added."""
        self.port, self.admin = port or free_port(), free_port()
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        flags = {f"--{k.replace('_', '-')}": v for k, v in flags.items()}
        args = []
        for a in container["args"]:
            name = a.split("=", 1)[0]
            if name == "--listen":
                a = f"--listen=127.0.0.1:{self.port}"
            elif name == "--admin-listen":
                a = f"--admin-listen=127.0.0.1:{self.admin}"
            elif name == "--cert-dns-names":
                a += ",localhost"
            elif name in flags:
                a = f"{name}={flags.pop(name)}"
            args.append(a)
        self.args = args + [f"{k}={v}" for k, v in flags.items()]
        sa = deployment["spec"]["template"]["spec"]["serviceAccountName"]
        token = cluster.kubectl("create", "token", sa, "-n", NAMESPACE, "--duration", "2h").stdout.strip()
        self.kubeconfig = cluster.dir / "webhook.kubeconfig"
        self.kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "local", "cluster": {
                "server": f"https://127.0.0.1:{cluster.port}",
                "certificate-authority": str(cluster.dir / "pki" / "ca.crt")}}],
            "users": [{"name": sa, "user": {"token": token}}],
            "contexts": [{"name": "local", "context": {"cluster": "local", "user": sa}}],
            "current-context": "local"}))
        self.log = cluster.dir / "logs" / f"webhook-{self.port}.log"
        env = dict(os.environ, KUBECONFIG=str(self.kubeconfig), POD_NAME="imw-e2e",
                   POD_NAMESPACE=NAMESPACE, RUST_LOG="info")
        self.proc = subprocess.Popen([binary, *self.args], env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=open(self.log, "a"))

    def ready(self):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.admin}/readyz", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def logs(self):
        return self.log.read_text()

    def metric(self, series):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin}/metrics", timeout=5) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(series + " "):
                    return float(line.split()[-1])
        return None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Quiet(BaseHTTPRequestHandler):
    """A request handler that logs nothing and answers with one call."""

    def reply(self, status, body, kind="application/json"):
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def point_at_localhost(mwc, port):
    for w in mwc["webhooks"]:
        w["clientConfig"].pop("service", None)
        w["clientConfig"]["url"] = f"https://localhost:{port}/mutate"
    return mwc


class Sidecar:
    """A second mutating webhook, called after ours, that adds a sidecar container: the API
    server then calls ours again (reinvocationPolicy: IfNeeded)."""

    def __init__(self, cluster):
        self.port = free_port()
        d = cluster.dir / "sidecar"
        d.mkdir()
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                        d / "key.pem", "-out", d / "cert.pem", "-days", "1", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost"], check=True, capture_output=True)
        self.ca = (d / "cert.pem").read_bytes()

        class Handler(Quiet):
            def do_POST(self):
                review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                request = review["request"]
                names = [c["name"] for c in request["object"]["spec"]["containers"]]
                response = {"uid": request["uid"], "allowed": True}
                if "sidecar" not in names:
                    patch = [{"op": "add", "path": "/spec/containers/-",
                              "value": {"name": "sidecar", "image": "busybox:1.36"}}]
                    response["patchType"] = "JSONPatch"
                    response["patch"] = base64.b64encode(json.dumps(patch).encode()).decode()
                self.reply(200, json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                                            "response": response}).encode())

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(d / "cert.pem", d / "key.pem")
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def configuration(self, namespace):
        return {
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
            # Named after ours: the API server calls configurations in name order.
            "metadata": {"name": "zz-sidecar-injector"},
            "webhooks": [{
                "name": "sidecar.e2e.example.com", "admissionReviewVersions": ["v1"],
                "sideEffects": "None", "failurePolicy": "Fail", "timeoutSeconds": 5,
                "reinvocationPolicy": "IfNeeded",
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                           "resources": ["pods"]}],
                "clientConfig": {"url": f"https://localhost:{self.port}/",
                                 "caBundle": base64.b64encode(self.ca).decode()}}]}

    def stop(self):
        self.server.shutdown()


def mirrored(image):
    """What the policy makes of an official Docker Hub image (`nginx:1.25`, `redis@sha256:...`)."""
    return f"{MIRROR}/library/{image}"


def scenarios(binary, cluster):
    values = {"policy": POLICY, "pullSecrets": {"enabled": True}, "imageMirrorSets": {"watch": True}}
    docs = render(values)
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    cluster.namespace(NAMESPACE)
    cluster.kubectl("-n", NAMESPACE, "create", "secret", "generic", "mirror-credentials",
                    "--type=kubernetes.io/basic-auth", "--from-literal=username=robot",
                    f"--from-literal=password={PASSWORD}")
    skipped = {"Deployment", "Service", "PodDisruptionBudget", "MutatingWebhookConfiguration"}
    cluster.apply([d for d in docs if d["kind"] not in skipped])
    install_mirror_set_kinds(cluster)
    deployment = by_kind["Deployment"][0]
    hook = Webhook(binary, cluster, deployment)
    cluster.apply([point_at_localhost(by_kind["MutatingWebhookConfiguration"][0], hook.port)])
    hooks = [hook]

    def restart(**flags):
        hooks[-1].stop()
        hooks.append(Webhook(binary, cluster, deployment, port=hook.port, **flags))
        return wait("the webhook ready again", hooks[-1].ready, 60)

    try:
        check("the webhook is ready as the chart's ServiceAccount", wait("readiness", hook.ready, 60),
              hook.logs()[-2000:])
        bundle = lambda: cluster.json("get", "mutatingwebhookconfiguration", FULL)["webhooks"][0]["clientConfig"].get("caBundle")
        check("selfManaged: the CA bundle is patched in with the chart's RBAC", wait("caBundle", bundle, 60))
        tls = next(a for a in hook.args if a.startswith("--cert-secret=")).split("/", 1)[1]
        check("selfManaged: the certificate Secret is written",
              cluster.kubectl("get", "secret", "-n", NAMESPACE, tls, ok=False).returncode == 0)
        admission(cluster)
        mirror_sets(cluster)
        reinvocation(cluster)
        policy_edits(cluster)
        watch_after_compaction(cluster, hook)
        audit(binary, cluster)
        check("client authentication: the webhook restarts requiring the API server's certificate",
              restart(client_ca_file=str(cluster.dir / "pki" / "ca.crt")))
        client_authentication(cluster, hooks[-1])
        # A certificate of a year is in the Secret: without it the webhook makes a 90 s one.
        tls = next(a for a in hook.args if a.startswith("--cert-secret=")).split("/", 1)[1]
        cluster.kubectl("delete", "secret", "-n", NAMESPACE, tls)
        check("renewal: the webhook restarts with a 90 s certificate renewed 80 s before it ends",
              restart(cert_validity="90s", cert_renew_before="80s", cert_check_interval="1s"))
        check("renewal: the new CA bundle is trusted", wait(
            "reviews with the new CA", lambda: dry_run_image(cluster, "edits") == mirrored("nginx:1.25"), 60))
        renewal(cluster, hooks[-1])
        hooks[-1].stop()
        hooks.append(existing_secret(binary, cluster))
        failure_policy(cluster, hooks[-1])
    finally:
        for h in hooks:
            h.stop()


def admission(cluster):
    for ns in ("team", "team-dry"):
        cluster.namespace(ns)
    # kubectl run: the stored Pod has the mirrored image and the managed pull secret, which the
    # chart's RBAC let the webhook write in the Pod's namespace.
    cluster.kubectl("run", "web", "-n", "team", "--image=nginx:1.25")
    images = cluster.pod_images("team", "web")
    check("kubectl run: the stored Pod has the mirrored image", images == {"web": mirrored("nginx:1.25")}, images)
    pod = cluster.json("get", "pod", "-n", "team", "web")
    secrets = [s["name"] for s in pod["spec"].get("imagePullSecrets", [])]
    check("kubectl run: the managed pull secret is attached", len(secrets) == 1, secrets)
    made = secrets and cluster.kubectl("get", "secret", "-n", "team", secrets[0], ok=False).returncode == 0
    check("managed pull secret made in the request's namespace", made)
    if made:
        data = cluster.json("get", "secret", "-n", "team", secrets[0])["data"][".dockerconfigjson"]
        auth = json.loads(base64.b64decode(data))["auths"].get(MIRROR, {})
        check("... holding the credentials of the Secret the policy names, read with the chart's RBAC",
              (auth.get("username"), auth.get("password")) == ("robot", PASSWORD))
    check("original images recorded",
          "image-mirror-webhook.io/original-images" in pod["metadata"].get("annotations", {}))

    # Server-side dry-run: the rewrite shows, and no Secret is written (sideEffects: NoneOnDryRun).
    dry = json.loads(cluster.kubectl("run", "dry", "-n", "team-dry", "--image=nginx:1.25",
                                     "--dry-run=server", "-o", "json").stdout)
    check("kubectl --dry-run=server shows the rewrite",
          dry["spec"]["containers"][0]["image"] == mirrored("nginx:1.25"), dry["spec"]["containers"])
    dry_secrets = cluster.json("get", "secrets", "-n", "team-dry")["items"]
    check("a dry-run writes no Secret", not [s for s in dry_secrets
                                            if s["metadata"].get("labels", {}).get("app.kubernetes.io/managed-by")
                                            == "image-mirror-webhook"], [s["metadata"]["name"] for s in dry_secrets])

    # A Deployment (init container, two containers, a digest): the controller manager's Pods.
    digest = "sha256:" + "a" * 64
    cluster.apply([{
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "shop", "namespace": "team"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "shop"}},
                 "template": {"metadata": {"labels": {"app": "shop"}}, "spec": {
                     "initContainers": [{"name": "init", "image": "busybox:1.36"}],
                     "containers": [{"name": "web", "image": "nginx:1.25"},
                                    {"name": "cache", "image": f"redis@{digest}"}]}}}}])
    shop = lambda: cluster.first_pod("team", "app=shop")
    if check_wait("Deployment: the controller manager made a Pod", shop, 90):
        images = cluster.pod_images("team", shop())
        want = {"init": mirrored("busybox:1.36"), "web": mirrored("nginx:1.25"),
                "cache": mirrored(f"redis@{digest}")}
        check("Deployment: init, containers and a digest mirrored", images == want, images)

    # A Job, and a CronJob's Job.
    cluster.kubectl("create", "job", "once", "-n", "team", "--image=busybox:1.36", "--", "true")
    job = lambda: cluster.first_pod("team", "job-name=once")
    if check_wait("Job: a Pod", job, 90):
        check("Job: mirrored", cluster.pod_images("team", job()) == {"once": mirrored("busybox:1.36")},
              cluster.pod_images("team", job()))
    cluster.kubectl("create", "cronjob", "nightly", "-n", "team", "--image=busybox:1.36",
                    "--schedule=0 3 * * *", "--", "true")
    cluster.kubectl("create", "job", "nightly-now", "-n", "team", "--from=cronjob/nightly")
    cron = lambda: cluster.first_pod("team", "job-name=nightly-now")
    if check_wait("CronJob's Job: a Pod", cron, 90):
        check("CronJob's Job: mirrored",
              cluster.pod_images("team", cron()) == {"nightly": mirrored("busybox:1.36")},
              cluster.pod_images("team", cron()))

    # kubectl debug: the ephemeral container (pods/ephemeralcontainers) is rewritten.
    cluster.kubectl("debug", "web", "-n", "team", "--image=busybox:1.36", "-c", "dbg")
    images = cluster.pod_images("team", "web")
    check("kubectl debug: the ephemeral container is mirrored", images.get("dbg") == mirrored("busybox:1.36"), images)

    # Opt-outs: a labelled namespace, a labelled Pod, the release namespace.
    cluster.namespace("opted-out")
    cluster.kubectl("label", "namespace", "opted-out", f"{SKIP}=true")
    cluster.kubectl("run", "web", "-n", "opted-out", "--image=nginx:1.25")
    check("a namespace labelled skip is left alone",
          cluster.pod_images("opted-out", "web") == {"web": "nginx:1.25"})
    cluster.kubectl("run", "own", "-n", "team", "--image=nginx:1.25", f"--labels={SKIP}=true")
    check("a Pod labelled skip is left alone", cluster.pod_images("team", "own") == {"own": "nginx:1.25"})
    cluster.kubectl("run", "web", "-n", NAMESPACE, "--image=nginx:1.25")
    check("the release namespace is left alone", cluster.pod_images(NAMESPACE, "web") == {"web": "nginx:1.25"})
    cluster.kubectl("delete", "pod", "web", "-n", NAMESPACE, "--wait=false")


def check_wait(what, ok, timeout):
    got = wait(what, ok, timeout)
    if not got:
        check(what, False)
    return got


def reinvocation(cluster):
    sidecar = Sidecar(cluster)
    try:
        cluster.namespace("meshed")
        cluster.apply([sidecar.configuration("meshed")])
        cluster.kubectl("run", "web", "-n", "meshed", "--image=nginx:1.25")
        images = cluster.pod_images("meshed", "web")
        check("reinvocation: a sidecar added after ours is mirrored too",
              images == {"web": mirrored("nginx:1.25"), "sidecar": mirrored("busybox:1.36")}, images)
    finally:
        cluster.kubectl("delete", "mutatingwebhookconfiguration", "zz-sidecar-injector", ok=False)
        sidecar.stop()


# OpenShift's mirror set kinds, as bare CRDs: the API server stores them, the webhook watches them.
MIRROR_SET_KINDS = [
    ("config.openshift.io", "v1", "ImageDigestMirrorSet", "imagedigestmirrorsets"),
    ("config.openshift.io", "v1", "ImageTagMirrorSet", "imagetagmirrorsets"),
    ("operator.openshift.io", "v1alpha1", "ImageContentSourcePolicy", "imagecontentsourcepolicies"),
]
E2E_DIGEST = "sha256:" + "ab" * 32


def install_mirror_set_kinds(cluster):
    crds = [{
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {"group": group, "scope": "Cluster",
                 "names": {"plural": plural, "singular": kind.lower(), "kind": kind, "listKind": f"{kind}List"},
                 "versions": [{"name": version, "served": True, "storage": True, "schema": {
                     "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}]},
    } for group, version, kind, plural in MIRROR_SET_KINDS]
    cluster.apply(crds)
    for group, _, _, plural in MIRROR_SET_KINDS:
        cluster.kubectl("wait", "--for=condition=Established", f"crd/{plural}.{group}", "--timeout=30s")


def mirror_sets(cluster):
    """An ImageDigestMirrorSet made in the cluster reaches the webhook's policy live: a digest is
    mirrored, a tag of its NeverContactSource repository is refused by the real API server with the
    webhook's reason, and deleting the set lifts both."""
    cluster.namespace("sets")
    idms = {"apiVersion": "config.openshift.io/v1", "kind": "ImageDigestMirrorSet",
            "metadata": {"name": "e2e"},
            "spec": {"imageDigestMirrors": [{"source": "quay.io/e2e", "mirrors": [f"{MIRROR}/quay-e2e"],
                                             "mirrorSourcePolicy": "NeverContactSource"}]}}
    cluster.apply([idms])
    digest = f"quay.io/e2e/app@{E2E_DIGEST}"
    check("mirror sets: a digest of the cluster's ImageDigestMirrorSet goes to its mirror", wait(
        "the set in force", lambda: dry_run_image(cluster, "sets", digest) == f"{MIRROR}/quay-e2e/app@{E2E_DIGEST}", 30))
    out = cluster.kubectl("run", "tagged", "-n", "sets", "--image=quay.io/e2e/app:1", ok=False)
    check("mirror sets: a tag of a NeverContactSource repository is refused with the set named",
          out.returncode != 0 and "ImageDigestMirrorSet/e2e" in out.stderr and "denied the request" in out.stderr,
          out.stderr[-600:])
    cluster.kubectl("delete", "imagedigestmirrorset", "e2e")
    check("mirror sets: deleting the set lifts the refusal", wait(
        "the set gone", lambda: dry_run_image(cluster, "sets", "quay.io/e2e/app:1") == "quay.io/e2e/app:1", 30))


def policy_edits(cluster):
    cm = f"{FULL}-policy"
    current = cluster.json("get", "configmap", "-n", NAMESPACE, cm)
    key = "policy.yaml"
    edited = dict(POLICY, mirrors={"docker.io": {"endpoint": [f"https://{OTHER}"]}})
    current["data"][key] = yaml.safe_dump(edited)
    cluster.apply([current])
    cluster.namespace("edits")

    def rewritten_to(host):
        return (dry_run_image(cluster, "edits") or "").startswith(host + "/")

    check("a ConfigMap edit applies within seconds", wait("the edited policy", lambda: rewritten_to(OTHER), 20))
    current = cluster.json("get", "configmap", "-n", NAMESPACE, cm)
    current["data"][key] = "mirrors:\n  docker.io:\n    endpiont: [oops]\n"
    cluster.apply([current])
    events = lambda: [e for e in cluster.json("get", "events", "-n", NAMESPACE)["items"]
                      if e["involvedObject"].get("name") == cm and e.get("type") == "Warning"]
    check("a bad edit: a Warning Event on the ConfigMap", wait("the Event", events, 20))
    check("a bad edit: the last good policy stays", rewritten_to(OTHER))
    current = cluster.json("get", "configmap", "-n", NAMESPACE, cm)
    current["data"][key] = yaml.safe_dump(POLICY)
    cluster.apply([current])
    wait("the first policy back", lambda: rewritten_to(MIRROR), 20)


def dry_run_image(cluster, ns, image="nginx:1.25"):
    """The image a server-side dry-run of a Pod stores (admission runs, nothing is written)."""
    name = f"p{time.monotonic_ns()}"
    out = cluster.kubectl("run", name, "-n", ns, f"--image={image}", "--dry-run=server", "-o", "json", ok=False)
    if out.returncode != 0:
        return None
    return json.loads(out.stdout)["spec"]["containers"][0]["image"]


def watch_after_compaction(cluster, hook):
    """The ConfigMap watch across an API server restart after etcd was compacted: the webhook's
    watch resumes from a revision that is gone (410), relists, and keeps the policy current."""
    reloads = 'image_mirror_policy_reloads_total{result="success"}'
    before = hook.metric(reloads)
    subprocess.run(["bash", str(HERE / "cluster.sh"), "compact", str(cluster.dir)], check=True,
                   capture_output=True)
    subprocess.run(["bash", str(HERE / "cluster.sh"), "restart-apiserver", str(cluster.dir)], check=True,
                   capture_output=True)
    check("after compaction and an API server restart the webhook stays ready", hook.ready())
    check("... its watch resumed from a compacted revision got 410 Gone", wait(
        "the 410", lambda: "too old resource version" in hook.logs(), 30), hook.logs()[-3000:])
    check("... and keeps the policy in force", wait(
        "a review", lambda: dry_run_image(cluster, "edits") == mirrored("nginx:1.25"), 30))
    check("... a relist of the unchanged ConfigMap is no reload", hook.metric(reloads) == before,
          (before, hook.metric(reloads)))
    cm = f"{FULL}-policy"
    current = cluster.json("get", "configmap", "-n", NAMESPACE, cm)
    current["data"]["policy.yaml"] = yaml.safe_dump(dict(POLICY, mirrors={"docker.io": {"endpoint": [f"https://{OTHER}"]}}))
    cluster.apply([current])
    check("... and applies the next edit", wait("the edit after the restart",
                                                 lambda: (dry_run_image(cluster, "edits") or "").startswith(OTHER + "/"), 60))
    current = cluster.json("get", "configmap", "-n", NAMESPACE, cm)
    current["data"]["policy.yaml"] = yaml.safe_dump(POLICY)
    cluster.apply([current])
    wait("the first policy back", lambda: dry_run_image(cluster, "edits") == mirrored("nginx:1.25"), 60)


def client_authentication(cluster, hook):
    """The API server presents the client certificate its AdmissionConfiguration names; the
    webhook accepts it and refuses a client without one."""
    check("client authentication: reviews from the API server are answered",
          dry_run_image(cluster, "edits") == mirrored("nginx:1.25"))
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    refused = False
    try:
        with socket.create_connection(("127.0.0.1", hook.port), timeout=5) as raw:
            with context.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
                refused = tls.recv(100) == b""
    except (ssl.SSLError, OSError):
        refused = True
    check("client authentication: a client without a certificate is refused", refused)


def served_certificate(port):
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            return tls.getpeercert(binary_form=True)


def renewal(cluster, hook):
    """A short-lived certificate renewed while reviews keep coming: none fails."""
    first = served_certificate(hook.port)
    results = []
    deadline = time.monotonic() + 25
    while time.monotonic() < deadline:
        results.append(dry_run_image(cluster, "edits"))
        time.sleep(0.5)
    renewed = served_certificate(hook.port) != first
    check("renewal: the serving certificate was renewed", renewed)
    check(f"renewal: every one of {len(results)} reviews during it was answered and mirrored",
          results and all(r == mirrored("nginx:1.25") for r in results), results)


class RestartingProxy:
    """A plain-HTTP proxy to the API server (with the admin's client certificate, as `kubectl
    proxy`) that, before the first continued list of Pods, writes, compacts etcd past the token's
    revision and restarts the API server: the real server then answers that continue token with
    410 Expired (a compaction alone does not: 1.37 serves continued lists from its watch cache)."""

    def __init__(self, cluster):
        self.port, self.expired, self.restarted = free_port(), 0, False
        pki = cluster.dir / "pki"
        context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        context.load_cert_chain(pki / "admin.crt", pki / "admin.key")
        upstream = f"https://127.0.0.1:{cluster.port}"
        proxy = self

        class Handler(Quiet):
            def do_GET(self):
                if "/pods" in self.path and "continue=" in self.path and not proxy.restarted:
                    proxy.restarted = True
                    # A write, so that the compaction passes the token's revision.
                    cluster.kubectl("create", "configmap", "bump", "-n", "team")
                    for step in ("compact", "restart-apiserver"):
                        subprocess.run(["bash", str(HERE / "cluster.sh"), step, str(cluster.dir)],
                                       check=True, capture_output=True)
                request = urllib.request.Request(upstream + self.path, headers={"Accept": self.headers.get("Accept", "*/*")})
                try:
                    with urllib.request.urlopen(request, context=context, timeout=30) as r:
                        status, body, kind = r.status, r.read(), r.headers.get("Content-Type")
                except urllib.error.HTTPError as e:
                    status, body, kind = e.code, e.read(), e.headers.get("Content-Type")
                if status == 410:
                    proxy.expired += 1
                self.reply(status, body, kind or "application/json")

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.kubeconfig = cluster.dir / "proxy.kubeconfig"
        self.kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "proxy", "cluster": {"server": f"http://127.0.0.1:{self.port}"}}],
            "users": [{"name": "proxy", "user": {}}],
            "contexts": [{"name": "proxy", "context": {"cluster": "proxy", "user": "proxy"}}],
            "current-context": "proxy"}))

    def stop(self):
        self.server.shutdown()


def audit(binary, cluster):
    def run(kubeconfig):
        out = subprocess.run([binary, "audit", "--policy-configmap", f"{NAMESPACE}/{FULL}-policy",
                              "--page-size", "2", "-o", "json", "-n", "team"],
                             env=dict(os.environ, KUBECONFIG=str(kubeconfig)),
                             capture_output=True, text=True, timeout=180)
        try:
            return json.loads(out.stdout), out
        except ValueError:
            return None, out

    report, out = run(cluster.kubeconfig)
    check("audit reads the real API in pages of 2", report is not None and out.returncode in (0, 1),
          out.stderr[-1000:])
    if report is None:
        return
    text = json.dumps(report)
    check("audit sees the Deployment and the CronJob", "Deployment/team/shop" in text
          and "CronJob/team/nightly" in text, text[:2000])
    proxy = RestartingProxy(cluster)
    try:
        again, out = run(proxy.kubeconfig)
    finally:
        proxy.stop()
    check("audit: the real API server expired a continue token (410)", proxy.expired >= 1, proxy.expired)
    check("audit: relisted after it, with the same totals", again is not None and
          again["totals"] == report["totals"] and again["errors"] == [],
          (again or {}).get("totals") if again else out.stderr[-1000:])


def existing_secret(binary, cluster):
    """certificates.mode existingSecret: a kubernetes.io/tls Secret the user made, its CA in the
    chart's values; the chart re-rendered and applied in that mode."""
    d = cluster.dir / "existing"
    d.mkdir()
    run = lambda *a: subprocess.run(a, check=True, capture_output=True)
    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", d / "ca.key", "-out",
        d / "ca.crt", "-days", "1", "-subj", "/CN=e2e-user-ca")
    run("openssl", "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", d / "tls.key", "-out",
        d / "tls.csr", "-subj", "/CN=localhost")
    (d / "ext").write_text("subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n")
    run("openssl", "x509", "-req", "-in", d / "tls.csr", "-CA", d / "ca.crt", "-CAkey", d / "ca.key",
        "-CAcreateserial", "-days", "1", "-extfile", d / "ext", "-out", d / "tls.crt")
    cluster.kubectl("create", "secret", "tls", "user-tls", "-n", NAMESPACE,
                    f"--cert={d / 'tls.crt'}", f"--key={d / 'tls.key'}")
    ca = base64.b64encode((d / "ca.crt").read_bytes()).decode()
    docs = render({"policy": POLICY, "pullSecrets": {"enabled": True},
                   "certificates": {"mode": "existingSecret",
                                    "existingSecret": {"name": "user-tls", "caBundle": ca}}})
    deployment = next(x for x in docs if x["kind"] == "Deployment")
    cluster.apply([x for x in docs if x["kind"] in ("Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding")])
    # The Secret's files where the Deployment mounts them (/tls), here a directory of ours.
    hook = Webhook(binary, cluster, deployment, tls_cert=str(d / "tls.crt"), tls_key=str(d / "tls.key"))
    mwc = point_at_localhost(next(x for x in docs if x["kind"] == "MutatingWebhookConfiguration"), hook.port)
    cluster.apply([mwc])
    check("existingSecret: the webhook is ready on the user's certificate", wait("readiness", hook.ready, 60))
    check("existingSecret: the API server trusts the CA from the values",
          wait("a mirrored dry-run", lambda: dry_run_image(cluster, "edits") == mirrored("nginx:1.25"), 60))
    return hook


def failure_policy(cluster, hook):
    """With the webhook stopped: Ignore admits unchanged in time; Fail refuses."""
    hook.stop()
    cluster.namespace("down")
    started = time.monotonic()
    cluster.kubectl("run", "web", "-n", "down", "--image=nginx:1.25")
    took = time.monotonic() - started
    check("failurePolicy Ignore: with the webhook down the Pod is admitted unchanged",
          cluster.pod_images("down", "web") == {"web": "nginx:1.25"})
    check("failurePolicy Ignore: within timeoutSeconds", took < 10, took)
    mwc = cluster.json("get", "mutatingwebhookconfiguration", FULL)
    mwc["webhooks"][0]["failurePolicy"] = "Fail"
    cluster.apply([mwc])
    refused = cluster.kubectl("run", "again", "-n", "down", "--image=nginx:1.25", ok=False)
    check("failurePolicy Fail: the Pod is refused with the API server's message",
          refused.returncode != 0 and "failed calling webhook" in refused.stderr, refused.stderr)


def main():
    binary = str(pathlib.Path(sys.argv[1]).resolve())
    subprocess.run(["bash", str(HERE / "cluster.sh"), "build"], check=True)
    directory = tempfile.mkdtemp(prefix="imw-cluster-")
    started = time.monotonic()
    up = subprocess.run(["bash", str(HERE / "cluster.sh"), "up", directory])
    try:
        if up.returncode != 0:
            for log in (pathlib.Path(directory) / "logs").glob("*.log"):
                print(f"--- {log.name}\n{log.read_text()[-3000:]}")
            check("the control plane comes up", False)
        else:
            cluster = Cluster(directory)
            version = cluster.kubectl("version", "-o", "json").stdout
            print(f"control plane up in {time.monotonic() - started:.0f} s: "
                  f"{json.loads(version)['serverVersion']['gitVersion']}", flush=True)
            scenarios(binary, cluster)
    finally:
        keep = os.environ.get("KEEP_CLUSTER")
        if keep:
            print(f"cluster kept in {directory}")
        else:
            subprocess.run(["bash", str(HERE / "cluster.sh"), "down", directory])
    print(f"e2e: {len(checks.passed)} passed, {len(checks.failures)} failed")
    for f in checks.failures:
        print(f"  {f}")
    sys.exit(1 if checks.failures else 0)


if __name__ == "__main__":
    main()
