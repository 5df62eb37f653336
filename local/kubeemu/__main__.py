"""Run the emulator on its own for a manual look: ``python -m local.kubeemu --kubeconfig /tmp/kc [manifest.yaml...]``.

Then ``kubectl --kubeconfig /tmp/kc get ns``. Stops on Ctrl-C / SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from .emulator import KubeEmulator


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local.kubeemu", description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", required=True, help="where to write the kubeconfig (mode 0600)")
    parser.add_argument("--rbac", action="store_true", help="enforce stored RBAC objects for non-admin tokens")
    parser.add_argument("manifests", nargs="*", help="YAML files to seed before serving")
    args = parser.parse_args(argv)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    with KubeEmulator(rbac=args.rbac) as emu:
        for path in args.manifests:
            emu.load_manifests(path)
        emu.write_kubeconfig(args.kubeconfig)
        print(f"kubeemu serving {emu.url}; kubeconfig written to {args.kubeconfig}", flush=True)
        try:
            done.wait()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
