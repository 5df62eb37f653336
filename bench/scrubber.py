"""configmap-secret-scrubber detector: precision/recall per corpus, per part and per tier; throughput.

Run: ``.venv/bin/python -m bench scrubber`` (or ``make bench``). Corpora are read from
``$EDGEGUARD_SECRETS_CORPUS``, else ``../shared/data/secrets`` next to the checkout (the
project's shared data), else the copies in tests/data/secrets (a plain clone has no ../shared).

Every corpus is split into a *tuning* part and an *evaluation* part by origin group (CredData
repository, rule source file, ...; see ``bench/secret_split.py`` and ``bench/data/secrets_split.csv``).
Rules may be changed by looking at tuning rows only; the evaluation part is the out-of-sample figure.
Figures are per corpus, never pooled: CredData source lines are a different population from ConfigMaps.
"""

from __future__ import annotations

import csv
import importlib
import importlib.util
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import yaml

from bench import secret_split as split_mod
from bench.secret_split import EVALUATION, TUNING

ROOT = Path(__file__).resolve().parent.parent
FUNCTION_DIR = ROOT / "functions" / "configmap-secret-scrubber"
TEST_DATA = ROOT / "tests" / "data" / "secrets"
TIERS = (("high", {"high"}), ("any", {"high", "suspect"}))


def load_detect():
    """The function's detect module, imported as a package without the edgeguard runtime."""
    pkg = "_scrubber_detect_pkg"
    if pkg + ".detect" in sys.modules:
        return sys.modules[pkg + ".detect"]
    module = importlib.util.module_from_spec(importlib.machinery.ModuleSpec(pkg, None, is_package=True))
    # an empty package: detect and gitleaks, and for move_timing remediate, whose `.edgeguard` is the
    # repository's (a build context holds a copy of it there)
    module.__path__ = [str(FUNCTION_DIR), str(ROOT)]
    sys.modules[pkg] = module
    return importlib.import_module(pkg + ".detect")


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


def _scores(preds) -> dict:
    """preds: (tier or None, label) pairs -> per-tier precision/recall and counts."""
    out = {}
    for tier_name, accept in TIERS:
        tp = sum(1 for t, lab in preds if t in accept and lab)
        fp = sum(1 for t, lab in preds if t in accept and not lab)
        fn = sum(1 for t, lab in preds if t not in accept and lab)
        p, r = _pr(tp, fp, fn)
        out[tier_name] = {"precision": p, "recall": r, "tp": tp, "fp": fp, "fn": fn}
    out["rows"] = len(preds)
    out["positives"] = sum(1 for _, lab in preds if lab)
    return out


def _rule_counts(samples) -> dict:
    """samples: (findings, label) -> {(detector, tier): [fired, true]}; a rule counts once per row."""
    counts: dict[tuple, list] = defaultdict(lambda: [0, 0])
    for findings, label in samples:
        for rule in {(f.detector, f.tier) for f in findings}:
            counts[rule][0] += 1
            counts[rule][1] += bool(label)
    return dict(counts)


def evaluate_fixtures(directory: Path | None = None, detector=None, configmaps=None) -> dict:
    """Key-level (and line-level) scores on configmap_fixtures.yaml + configmap_labels.csv.

    ``configmaps``: only these ConfigMaps (a split part); default all.
    """
    directory = directory or corpus_dir()
    detect = load_detect()
    detector = detector or detect.Detector(b"bench")
    doc = yaml.safe_load((directory / "configmap_fixtures.yaml").read_text())
    key_label: dict[tuple, int] = defaultdict(int)
    line_label: dict[tuple, int] = {}
    with (directory / "configmap_labels.csv").open(newline="") as fh:
        for row in csv.DictReader(fh):
            if configmaps is not None and row["configmap"] not in configmaps:
                continue
            k = (row["configmap"], row["key"])
            key_label[k] = max(key_label[k], int(row["label"]))
            line_label[k + (int(row["line_no"]),)] = int(row["label"])
    verdicts = {}
    for cm in doc["items"]:
        if configmaps is not None and cm["metadata"]["name"] not in configmaps:
            continue
        for v in detector.scan_configmap(cm):
            verdicts[(cm["metadata"]["name"], v.key)] = v
    out = {}
    for tier_name, accept in TIERS:
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
        out[tier_name] = {
            "precision": p,
            "recall": r,
            "tp": tp,
            "fp": fp,
            "fn": fn,
            "errors": errors,
            "line_precision": lp,
            "line_recall": lr,
        }
    out["keys"] = out["rows"] = len(key_label)
    out["positive_keys"] = out["positives"] = sum(key_label.values())
    out["rules"] = _rule_counts((verdicts[k].findings if k in verdicts else [], lab) for k, lab in key_label.items())
    return out


def evaluate_rows(rows: list[dict], detector) -> dict:
    """Line-corpus rows (``text``, ``label``, ``name``) -> per-tier scores and per-rule counts."""
    verdicts = [detector.scan_key(r["name"], r["text"]) for r in rows]
    res = _scores([(v.tier, r["label"]) for v, r in zip(verdicts, rows)])
    res["rules"] = _rule_counts((v.findings, r["label"]) for v, r in zip(verdicts, rows))
    res["errors"] = {
        "fp": [r["text"] for v, r in zip(verdicts, rows) if v.tier and not r["label"]],
        "fn": [r["text"] for v, r in zip(verdicts, rows) if not v.tier and r["label"]],
    }
    return res


def evaluate_all(directory: Path | None = None, detector=None) -> dict:
    """{corpus: {part: scores}} for every corpus found; parts are tuning, evaluation (and all for fixtures)."""
    directory = directory or corpus_dir()
    det = detector or load_detect().Detector(b"bench")
    split = split_mod.load_split()
    results: dict[str, dict] = {}
    for corpus in split_mod.CORPUS_FILES:
        if not split_mod.available(directory, corpus):
            continue
        if corpus == "configmap_fixtures":
            names = split_mod.fixture_groups(directory)
            parts = {p: {n for n in names if split_mod.part_of(split, corpus, n) == p} for p in (TUNING, EVALUATION)}
            results[corpus] = {p: evaluate_fixtures(directory, det, members) for p, members in parts.items()}
            results[corpus]["all"] = evaluate_fixtures(directory, det)
            continue
        parts = split_mod.split_rows(split_mod.read_rows(directory, corpus), corpus, split)
        results[corpus] = {p: evaluate_rows(rows, det) for p, rows in parts.items()}
    return results


def _time_best(fn, repeat: int) -> tuple[float, float]:
    """(min, median) seconds of ``repeat`` runs: the minimum is the figure least disturbed by other load."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times)


def throughput(lines: int = 10000, repeat: int = 7) -> dict:
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
    file_s, file_med = _time_best(lambda: det.scan_key("big.conf", body), repeat)
    # env-style: one key per line, as a ConfigMap of many small keys
    cm = {"data": {f"K{i}_{c.split('=')[0][:20]}": c for i, c in enumerate(corpus * (2000 // len(corpus) + 1))}}
    keys_s, keys_med = _time_best(lambda: det.scan_configmap(cm), repeat)
    # worst cases: 1 MiB of minified JSON on one line; 1 MiB of random key=value lines
    import json
    import random
    import string

    rnd = random.Random(1)
    blob = json.dumps(
        {f"k{i}": "".join(rnd.choices(string.ascii_letters + string.digits, k=40)) for i in range(20000)}
    )[: 1 << 20]
    json_s, _ = _time_best(lambda: det.scan_key("minified.json", blob), 2)
    props = "\n".join(f"key{i}={''.join(rnd.choices(string.ascii_letters, k=30))}" for i in range(30000))[: 1 << 20]
    props_s, _ = _time_best(lambda: det.scan_key("random.properties", props), 2)
    n = len(cm["data"])
    return {
        "file_lines": lines,
        "file_seconds": file_s,
        "us_per_line": file_s / lines * 1e6,
        "us_per_line_median": file_med / lines * 1e6,
        "mib_json_seconds": json_s,
        "mib_props_seconds": props_s,
        "repeat": repeat,
        "keys": n,
        "keys_seconds": keys_s,
        "us_per_key": keys_s / n * 1e6,
        "us_per_key_median": keys_med / n * 1e6,
        "bytes": len(body),
    }


def move_timing(n: int = 20) -> dict:
    """Seconds per full move (Secret, rewire one Deployment, rollout, removal, Event) against the emulator."""
    from local.kubeemu import KubeEmulator

    detect = load_detect()
    pkg = detect.__package__
    remediate = importlib.import_module(pkg + ".remediate")
    kube = importlib.import_module(pkg + ".edgeguard.kube")
    kubeapi = importlib.import_module(pkg + ".edgeguard.kubeapi")
    with KubeEmulator() as emu:
        for i in range(n):
            emu.seed(
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": "aws-creds", "namespace": f"b{i}"},
                    "data": {"aws_access_key_id": "AKES20LNOA", "region": "eu-west-1"},
                }
            )
            emu.seed(
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "metadata": {"name": "web", "namespace": f"b{i}"},
                    "spec": {
                        "replicas": 1,
                        "selector": {"matchLabels": {"app": "web"}},
                        "template": {
                            "metadata": {"labels": {"app": "web"}},
                            "spec": {
                                "containers": [
                                    {
                                        "name": "c",
                                        "image": "busybox",
                                        "env": [
                                            {
                                                "name": "K",
                                                "valueFrom": {
                                                    "configMapKeyRef": {"name": "aws-creds", "key": "aws_access_key_id"}
                                                },
                                            }
                                        ],
                                    }
                                ]
                            },
                        },
                    },
                }
            )
        s = remediate.Scrubber(
            kubeapi.Client(kube.Connection.of(emu.api_client())),
            detect.Detector(b"bench"),
            remediate.Settings(mode="move", rollout_poll=0.01),
        )
        t0 = time.perf_counter()
        for i in range(n):
            assert s.process(f"b{i}", "aws-creds").status == "moved"
        dt = time.perf_counter() - t0
        calls = len(emu.requests)
    return {"moves": n, "seconds": dt, "ms_per_move": dt / n * 1000, "api_calls_per_move": calls / n}


HEAVY_NS, HEAVY_COUNT, HEAVY_BYTES = "bench-heavy", 200, 100_000
BIGGEST_COUNT, BIGGEST_BYTES = 20, 1_000_000  # near the API's 1 MiB object limit


def sweep_memory(runs: int = 3, kube: str = "auto", count: int = HEAVY_COUNT, size: int = HEAVY_BYTES):
    """RSS under the real watchdog (bench/memory.py) around the largest sweep the defaults allow: a namespace of
    max_configmaps_per_run (200) ConfigMaps of 100 kB each (20 MB of data, nothing to move), swept as a job with
    ?wait=1, then GET reports of it (``count`` ConfigMaps of ``size`` bytes for another shape). ``kube``:
    local/gateway.py's choice (auto: $KUBECONFIG's cluster, else the in-memory API, which answers metadata-only
    lists with whole objects; real: the shared tools' kube-apiserver). Returns bench.memory.Result."""
    from kubernetes import config as kconfig

    from bench import memory
    from edgeguard import kube as ekube
    from edgeguard import kubeapi
    from local import gateway

    def seed(stack) -> None:
        admin = kubeapi.Client(
            ekube.Connection.of(kconfig.new_client_from_config_dict(yaml.safe_load(stack.kubeconfig_text)))
        )
        if admin.get("Namespace", None, HEAVY_NS) is None:
            admin.create("Namespace", None, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": HEAVY_NS}})
        for i in range(count):
            text = "\n".join(f"k{j}=v{i}-{j}" for j in range(size // 8))[:size]  # ``size`` bytes of key=value
            body = {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": f"heavy-{i}"},
                "data": {"app.properties": text},
            }
            try:
                admin.create("ConfigMap", HEAVY_NS, body)
            except kubeapi.KubeError as err:
                if not err.conflict:
                    raise

    def first(ctx, tally):
        tally.check(
            ctx.call(FN_NAME, method="GET", token_secret=TOKEN, params={"namespace": HEAVY_NS, "name": "heavy-0"}),
            (200,),
            "report",
        )

    def load(ctx, tally):
        for _ in range(2):
            tally.check(
                ctx.call(FN_NAME, "?wait=1", body={"namespace": HEAVY_NS}, token_secret=TOKEN, timeout=120),
                (200,),
                "sweep",
            )
            tally.check(
                ctx.call(FN_NAME, method="GET", token_secret=TOKEN, params={"namespace": HEAVY_NS}, timeout=120),
                (200,),
                "report sweep",
            )

    with tempfile.TemporaryDirectory(prefix="edgeguard-bench-sweep-") as tmp:
        env = {FN_NAME: {"rate_limit_per_minute": "1000000"}}
        with gateway.LocalStack(
            gateway.free_port(), state_dir=Path(tmp) / "state", env_overrides=env, kube=kube, functions=[FN_NAME]
        ) as stack:
            seed(stack)
            return memory.measure_in(
                stack,
                FN_NAME,
                first=first,
                load=load,
                runs=runs,
                what=f"2 sweeps (job, ?wait=1) and 2 GET reports of {count} ConfigMaps "
                f"x {size // 1000} kB; Kubernetes: {stack.kube_description}",
            )


FN_NAME, TOKEN = "configmap-secret-scrubber", "configmap-secret-scrubber-token"


# Which figures are in-sample, whatever the split says: printed with the table.
IN_SAMPLE_NOTES = (
    "tuning = in-sample (rules may be changed by looking at these rows); evaluation = not used for tuning.",
    "configmap_fixtures 'all' is in-sample: the fixtures were written with the detector in view, both parts.",
    "gitleaks_rule_cases: gitleaks' provider rules were written against these very cases upstream, so the",
    "  gitleaks:* rules are in-sample on both parts; only this project's own rules are measured out of sample.",
    "creddata: config-like files, UUID rows dropped; T values are obfuscated upstream (strict formats can fail).",
)


def _fmt(s: dict) -> str:
    return (
        f"{s['rows']:>5} {s['positives']:>4}  {s['high']['precision']:6.2f} {s['high']['recall']:6.2f}"
        f"  {s['any']['precision']:6.2f} {s['any']['recall']:6.2f}"
    )


def print_report(results: dict, out=sys.stdout) -> None:
    print(
        f"{'corpus':30} {'part':11} {'rows':>5} {'pos':>4}  {'highP':>6} {'highR':>6}  {'anyP':>6} {'anyR':>6}",
        file=out,
    )
    for corpus, parts in results.items():
        for part in (TUNING, EVALUATION, "all"):
            if part in parts:
                tag = {TUNING: "tuning*", EVALUATION: "evaluation", "all": "all*"}[part]
                print(f"{corpus:30} {tag:11} {_fmt(parts[part])}", file=out)
    print("  * in-sample.", file=out)
    for note in IN_SAMPLE_NOTES:
        print("  " + note, file=out)
    print("\nper-rule precision on the evaluation part (rows where the rule fired at that tier):", file=out)
    for corpus, parts in results.items():
        rules = parts[EVALUATION]["rules"]
        if not rules:
            continue
        print(f"  {corpus}:", file=out)
        for (rule, tier), (fired, true) in sorted(rules.items(), key=lambda kv: (kv[0][1] != "high", kv[0][0])):
            print(f"    {rule:48} {tier:8} {true / fired:5.2f}  ({true}/{fired})", file=out)


def main() -> None:
    import resource

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    load_detect().Detector(b"bench")
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"detector with compiled gitleaks rules: peak RSS {rss1 / 1024:.0f} MiB (+{(rss1 - rss0) / 1024:.1f} MiB)")
    directory = corpus_dir()
    print(
        f"configmap-secret-scrubber detector, corpora from {directory}; split {split_mod.SPLIT_FILE.relative_to(ROOT)}"
    )
    missing = [c for c in split_mod.CORPUS_FILES if not split_mod.available(directory, c)]
    if missing:
        print(
            f"  not in that directory, so not measured: {', '.join(missing)} "
            f"(set EDGEGUARD_SECRETS_CORPUS to the full corpus)"
        )
    print_report(evaluate_all(directory))
    t = throughput()
    print(
        f"throughput (best of {t['repeat']}, median in brackets): one {t['bytes']} B value of {t['file_lines']} lines "
        f"{t['us_per_line']:.0f} us/line ({t['us_per_line_median']:.0f}); {t['keys']} env-style keys "
        f"{t['us_per_key']:.0f} us/key ({t['us_per_key_median']:.0f})"
    )
    print(
        f"worst cases: 1 MiB minified JSON on one line {t['mib_json_seconds']:.2f} s; "
        f"1 MiB of random key=value lines {t['mib_props_seconds']:.2f} s"
    )
    m = move_timing()
    print(
        f"move against the in-process API emulator: {m['moves']} ConfigMaps in {m['seconds']:.2f} s "
        f"({m['ms_per_move']:.0f} ms/move, {m['api_calls_per_move']:.0f} API calls/move)"
    )
    from bench import memory
    from local import components

    reason = components.locate().watchdog_skip_reason()
    if reason:
        print(f"largest sweep under the real watchdog: skipped ({reason})")
    else:
        print(
            "largest sweeps under the real watchdog:\n"
            + memory.table([sweep_memory(), sweep_memory(runs=1, count=BIGGEST_COUNT, size=BIGGEST_BYTES)])
        )


if __name__ == "__main__":
    main()
