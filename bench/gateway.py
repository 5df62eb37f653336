"""Overhead of the local gateway + runtime on a trivial function (context for the per-function figures)."""
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import requests
import yaml

from local import gateway, stackfile

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"


def main(n: int = 500) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        shutil.copytree(DATA / "contract_fn", tmp / "functions" / "probe")
        (tmp / "stack.yml").write_text(yaml.safe_dump({
            "version": "1.0", "provider": {"name": "openfaas"},
            "functions": {"probe": {"lang": "python3-http", "handler": "./functions/probe", "image": "x/probe:1"}}}))
        with gateway.LocalStack(gateway.free_port(), state_dir=tmp / "state", kube="none",
                                stack=stackfile.load(tmp / "stack.yml")) as ls:
            s = requests.Session()
            for _ in range(20):
                s.post(ls.url + "/function/probe/none")
            lat = []
            for _ in range(n):
                t = time.perf_counter()
                s.post(ls.url + "/function/probe/none")
                lat.append((time.perf_counter() - t) * 1000)
            lat.sort()
            print(f"local gateway round trip, empty function: p50 {statistics.median(lat):.2f} ms, "
                  f"p99 {lat[int(len(lat) * 0.99) - 1]:.2f} ms over {n} calls")
