"""What the Python tests share: the chart rendered with Helm's own engine (helm-python-sdk), and
one way to record checks and report them."""

import pathlib
import sys

import helm_python as helm
import yaml

CHART = pathlib.Path(__file__).resolve().parents[2] / "charts" / "image-mirror-webhook"


def render_files(values, release, namespace):
    """Every file the chart renders, by name, as `helm install` would."""
    chart = helm.Chart.load(str(CHART))
    try:
        return chart.render(values, name=release, namespace=namespace, is_install=True)
    finally:
        chart.close()


def render(values, release, namespace, notes=False):
    """The rendered objects (the `helm test` hooks left out), and with `notes` the NOTES.txt text."""
    out = render_files(values, release, namespace)
    docs = []
    for name, text in out.items():
        if name.endswith(".yaml") and "/tests/" not in name:
            docs += [d for d in yaml.safe_load_all(text) if d]
    if notes:
        return docs, next((t for n, t in out.items() if n.endswith("NOTES.txt")), "")
    return docs


def one(docs, kind, name=None):
    """The one object of `kind` (named `name`), or None when there is none or more than one."""
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    return found[0] if len(found) == 1 else None


class Checks:
    """Records checks; `finish` prints the failures and exits non-zero when there are any."""

    def __init__(self, verbose=False):
        self.passed, self.failures, self.verbose = [], [], verbose

    def check(self, what, ok, got=None):
        if ok:
            self.passed.append(what)
            if self.verbose:
                print(f"ok: {what}", flush=True)
            return
        self.failures.append(what + (f" (got {got!r})" if got is not None else ""))
        if self.verbose:
            print(f"FAILED: {self.failures[-1]}", flush=True)

    def finish(self, name, success):
        if self.failures:
            print(f"{name}: FAILED", *self.failures, sep="\n  ")
            sys.exit(1)
        print(f"{name}: {success}")
