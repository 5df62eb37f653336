"""configmap-secret-scrubber detector: precision/recall per labelled corpus, and throughput.

Run: ``.venv/bin/python -m bench.scrubber`` (or ``make bench``). Corpora are read from
``$EDGEGUARD_SECRETS_CORPUS``, else ``../shared/data/secrets`` next to the checkout (the
project's shared data), else the subset copied into tests/data/secrets (a plain clone has
no ../shared; the corpora missing there are left out of the table and named). Figures are per file, never pooled: CredData
source-code lines are a different population from ConfigMap data.
"""
from __future__ import annotations

import csv
import importlib
import importlib.util
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
FUNCTION_DIR = ROOT / "functions" / "configmap-secret-scrubber"
TEST_DATA = ROOT / "tests" / "data" / "secrets"


def load_detect():
    """The function's detect module, imported as a package without the edgeguard runtime."""
    pkg = "_scrubber_detect_pkg"
    if pkg + ".detect" in sys.modules:
        return sys.modules[pkg + ".detect"]
    module = importlib.util.module_from_spec(importlib.machinery.ModuleSpec(pkg, None, is_package=True))
    module.__path__ = [str(FUNCTION_DIR)]  # an empty package: only detect and gitleaks are imported
    sys.modules[pkg] = module
    return importlib.import_module(pkg + ".detect")


CORPORA = ("noseyparker_examples.csv", "gitleaks_rule_cases.csv", "detect_secrets_keyword_cases.csv",
           "creddata_sample.csv", "creddata_test3.csv")


def corpus_dir() -> Path:
    env = os.environ.get("EDGEGUARD_SECRETS_CORPUS")
    for d in ([Path(env)] if env else []) + [ROOT.parent / "shared" / "data" / "secrets"]:
        if (d / "configmap_fixtures.yaml").exists():
            return d
    return TEST_DATA


def _pr(tp, fp, fn):
    p = tp / (tp + fp) if tp + fp else 1.0
    r = tp / (tp + fn) if tp + fn else 1.0
    return p, r


def evaluate_fixtures(directory: Path | None = None, detector=None) -> dict:
    """Key-level (and line-level) scores on configmap_fixtures.yaml + configmap_labels.csv."""
    directory = directory or corpus_dir()
    detect = load_detect()
    detector = detector or detect.Detector(b"bench")
    doc = yaml.safe_load((directory / "configmap_fixtures.yaml").read_text())
    key_label: dict[tuple, int] = defaultdict(int)
    line_label: dict[tuple, int] = {}
    with (directory / "configmap_labels.csv").open(newline="") as fh:
        for row in csv.DictReader(fh):
            k = (row["configmap"], row["key"])
            key_label[k] = max(key_label[k], int(row["label"]))
            line_label[k + (int(row["line_no"]),)] = int(row["label"])
    verdicts = {}
    for cm in doc["items"]:
        for v in detector.scan_configmap(cm):
            verdicts[(cm["metadata"]["name"], v.key)] = v
    out = {}
    for tier_name, accept in (("high", {"high"}), ("any", {"high", "suspect"})):
        tp = fp = fn = 0
        errors = []
        for k, label in key_label.items():
            pred = verdicts[k].tier in accept if k in verdicts else False
            if pred and label:
                tp += 1
            elif pred:
                fp += 1
                errors.append(("FP",) + k)
            elif label:
                fn += 1
                errors.append(("FN",) + k)
        p, r = _pr(tp, fp, fn)
        # line level: PEM bodies count on their first line only
        ltp = lfp = lfn = 0
        for (cm, key, ln), label in line_label.items():
            if key == "tls.key" and ln > 1:
                continue
            v = verdicts.get((cm, key))
            pred = bool(v) and any(f.line == ln and f.tier in accept for f in v.findings)
            ltp += pred and label
            lfp += pred and not label
            lfn += (not pred) and label
        lp, lr = _pr(ltp, lfp, lfn)
        out[tier_name] = {"precision": p, "recall": r, "tp": tp, "fp": fp, "fn": fn, "errors": errors,
                          "line_precision": lp, "line_recall": lr}
    out["keys"] = len(key_label)
    out["positive_keys"] = sum(key_label.values())
    return out


def _predict_text(detector, text: str, name: str) -> str | None:
    v = detector.scan_key(name, text)
    return v.tier


def evaluate_line_corpus(path: Path, detector, text_col="text", label_fn=None, name_fn=None, keep=None) -> dict:
    rows = [r for r in csv.DictReader(path.open(newline="")) if keep is None or keep(r)]
    res = {}
    preds = []
    for row in rows:
        name = name_fn(row) if name_fn else "config"
        preds.append((_predict_text(detector, row[text_col], name), label_fn(row)))
    for tier_name, accept in (("high", {"high"}), ("any", {"high", "suspect"})):
        tp = sum(1 for t, lab in preds if t in accept and lab)
        fp = sum(1 for t, lab in preds if t in accept and not lab)
        fn = sum(1 for t, lab in preds if t not in accept and lab)
        p, r = _pr(tp, fp, fn)
        res[tier_name] = {"precision": p, "recall": r, "tp": tp, "fp": fp, "fn": fn}
    res["rows"] = len(rows)
    res["positives"] = sum(1 for _, lab in preds if lab)
    return res


def _not_uuid(row) -> bool:
    return "UUID" not in row["category"].split(":")


def evaluate_all(directory: Path | None = None) -> dict:
    directory = directory or corpus_dir()
    detect = load_detect()
    det = detect.Detector(b"bench")
    results = {"configmap_fixtures (key level)": evaluate_fixtures(directory, det)}
    specs = {
        "noseyparker_examples.csv": dict(label_fn=lambda r: r["label"] == "1"),
        "gitleaks_rule_cases.csv": dict(label_fn=lambda r: r["label"] == "1"),
        "detect_secrets_keyword_cases.csv": dict(label_fn=lambda r: r["label"] == "1"),
        # UUID-category rows dropped, as in the reference's head-to-head (a UUID is an id, not a secret)
        "creddata_sample.csv": dict(label_fn=lambda r: r["ground_truth"] == "T",
                                    name_fn=lambda r: "file" + r["file_ext"], keep=_not_uuid),
        "creddata_test3.csv": dict(label_fn=lambda r: r["ground_truth"] == "T",
                                   name_fn=lambda r: "file" + r["file_ext"], keep=_not_uuid),
    }
    for fname, kw in specs.items():
        p = directory / fname
        if p.exists():
            results[fname] = evaluate_line_corpus(p, det, **kw)
    return results


def throughput(lines: int = 10000) -> dict:
    detect = load_detect()
    det = detect.Detector(b"bench")
    directory = corpus_dir()
    doc = yaml.safe_load((directory / "configmap_fixtures.yaml").read_text())
    corpus = []
    for cm in doc["items"]:
        for v in (cm.get("data") or {}).values():
            corpus.extend(v.split("\n"))
    corpus = [c for c in corpus if c.strip()]
    body = "\n".join((corpus * (lines // len(corpus) + 1))[:lines])
    t0 = time.perf_counter()
    det.scan_key("big.conf", body)
    file_s = time.perf_counter() - t0
    # env-style: one key per line, as a ConfigMap of many small keys
    cm = {"data": {f"K{i}_{c.split('=')[0][:20]}": c for i, c in enumerate(corpus * (2000 // len(corpus) + 1))}}
    t0 = time.perf_counter()
    det.scan_configmap(cm)
    keys_s = time.perf_counter() - t0
    # worst cases: 1 MiB of minified JSON on one line; 1 MiB of random key=value lines
    import json
    import random
    import string
    rnd = random.Random(1)
    blob = json.dumps({f"k{i}": "".join(rnd.choices(string.ascii_letters + string.digits, k=40))
                       for i in range(20000)})[: 1 << 20]
    t0 = time.perf_counter()
    det.scan_key("minified.json", blob)
    json_s = time.perf_counter() - t0
    props = "\n".join(f"key{i}={''.join(rnd.choices(string.ascii_letters, k=30))}" for i in range(30000))[: 1 << 20]
    t0 = time.perf_counter()
    det.scan_key("random.properties", props)
    props_s = time.perf_counter() - t0
    return {"file_lines": lines, "file_seconds": file_s, "us_per_line": file_s / lines * 1e6,
            "mib_json_seconds": json_s, "mib_props_seconds": props_s,
            "keys": len(cm["data"]), "keys_seconds": keys_s, "us_per_key": keys_s / len(cm["data"]) * 1e6,
            "bytes": len(body)}


def move_timing(n: int = 20) -> dict:
    """Seconds per full move (Secret, rewire one Deployment, rollout, removal, Event) against the emulator."""
    from local.kubeemu import KubeEmulator

    detect = load_detect()
    pkg = detect.__package__
    remediate = importlib.import_module(pkg + ".remediate")
    kapi = importlib.import_module(pkg + ".kapi")
    with KubeEmulator() as emu:
        for i in range(n):
            emu.seed({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "aws-creds", "namespace": f"b{i}"},
                      "data": {"aws_access_key_id": "AKES20LNOA", "region": "eu-west-1"}})
            emu.seed({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": f"b{i}"},
                      "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                               "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{
                                   "name": "c", "image": "busybox", "env": [{"name": "K", "valueFrom": {
                                       "configMapKeyRef": {"name": "aws-creds", "key": "aws_access_key_id"}}}]}]}}}})
        s = remediate.Scrubber(kapi.Kube(emu.api_client()), detect.Detector(b"bench"),
                               remediate.Settings(mode="move", rollout_poll=0.01))
        t0 = time.perf_counter()
        for i in range(n):
            assert s.process(f"b{i}", "aws-creds").status == "moved"
        dt = time.perf_counter() - t0
        calls = len(emu.requests)
    return {"moves": n, "seconds": dt, "ms_per_move": dt / n * 1000, "api_calls_per_move": calls / n}


def main() -> None:
    import resource
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    load_detect().Detector(b"bench")
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"detector with compiled gitleaks rules: peak RSS {rss1 / 1024:.0f} MiB (+{(rss1 - rss0) / 1024:.1f} MiB)")
    print(f"configmap-secret-scrubber detector, corpora from {corpus_dir()}")
    missing = [c for c in CORPORA if not (corpus_dir() / c).exists()]
    if missing:
        print(f"  not in that directory, so not measured: {', '.join(missing)} "
              f"(set EDGEGUARD_SECRETS_CORPUS to the full corpus)")
    print(f"{'file':40} {'rows':>5} {'pos':>4}  {'high P':>7} {'high R':>7}  {'any P':>7} {'any R':>7}")
    for name, r in evaluate_all().items():
        rows = r.get("rows", r.get("keys"))
        pos = r.get("positives", r.get("positive_keys"))
        print(f"{name:40} {rows:>5} {pos:>4}  {r['high']['precision']:7.2f} {r['high']['recall']:7.2f}"
              f"  {r['any']['precision']:7.2f} {r['any']['recall']:7.2f}")
    t = throughput()
    print(f"throughput: one {t['bytes']} B value of {t['file_lines']} lines in {t['file_seconds']:.2f} s "
          f"({t['us_per_line']:.0f} us/line); {t['keys']} env-style keys in {t['keys_seconds']:.2f} s "
          f"({t['us_per_key']:.0f} us/key)")
    print(f"worst cases: 1 MiB minified JSON on one line {t['mib_json_seconds']:.2f} s; "
          f"1 MiB of random key=value lines {t['mib_props_seconds']:.2f} s")
    m = move_timing()
    print(f"move against the in-process API emulator: {m['moves']} ConfigMaps in {m['seconds']:.2f} s "
              f"({m['ms_per_move']:.0f} ms/move, {m['api_calls_per_move']:.0f} API calls/move)")


if __name__ == "__main__":
    main()
