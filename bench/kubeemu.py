"""Kubernetes API emulator: start/stop cost (a fresh emulator per test) and request latency via the real client."""

import resource
import statistics
import time


def _pct(values, p):
    values = sorted(values)
    return values[max(0, int(len(values) * p) - 1)]


def main(n: int = 300, cycles: int = 30) -> None:
    import kubernetes

    from local.kubeemu import KubeEmulator

    starts, stops = [], []
    for _ in range(cycles):
        t = time.perf_counter()
        emu = KubeEmulator().start()
        starts.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        emu.stop()
        stops.append((time.perf_counter() - t) * 1000)
    print(
        f"start: p50 {statistics.median(starts):.1f} ms, max {max(starts):.1f} ms; "
        f"stop: p50 {statistics.median(stops):.1f} ms, max {max(stops):.1f} ms ({cycles} cycles)"
    )

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with KubeEmulator() as emu:
        client = emu.api_client()
        core = kubernetes.client.CoreV1Api(client)
        for verb in ("create", "get", "patch", "list"):
            lat = []
            for i in range(n):
                t = time.perf_counter()
                if verb == "create":
                    core.create_namespaced_config_map(
                        "default", {"metadata": {"name": f"c{i}"}, "data": {"k": "v" * 100}}
                    )
                elif verb == "get":
                    core.read_namespaced_config_map(f"c{i}", "default")
                elif verb == "patch":
                    core.patch_namespaced_config_map(f"c{i}", "default", {"data": {"k2": str(i)}})
                else:
                    core.list_namespaced_config_map("default", label_selector="app!=x", limit=50)
                lat.append((time.perf_counter() - t) * 1000)
            print(
                f"{verb:6s} ConfigMap via kubernetes client: p50 {statistics.median(lat):.2f} ms, "
                f"p99 {_pct(lat, 0.99):.2f} ms over {n} calls ({n} objects stored)"
            )
        client.close()
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        f"peak RSS of the bench process: {rss1 / 1024:.0f} MiB (grew {(rss1 - rss0) / 1024:.1f} MiB while "
        f"serving {4 * n} requests)"
    )


if __name__ == "__main__":
    main()
