"""edgeguard-rules: validate Falco k8s_audit rules files and replay audit events through them.

  edgeguard-rules validate FILE...
  edgeguard-rules replay [--rules FILE]... [--rule-matching first|all] EVENTS...

replay prints one Falco JSON alert per line on stdout and a count summary on
stderr. Exit status: 2 when the rules fail to load or an input cannot be read,
0 otherwise.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter

from . import loader
from .engine import DEFAULT_RULES, Engine
from .source import Batch, split_payload

EXIT_OK = 0
EXIT_ERROR = 2


def _load(paths):
    return loader.load(loader.rules_paths(paths))


def cmd_validate(args) -> int:
    try:
        ruleset = _load(args.files)
    except loader.RulesLoadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    for w in ruleset.warnings:
        print(f"warning: {w}", file=sys.stderr)
    for f in ruleset.files:
        print(f"{f['name']}: Ok")
    print(f"{len(ruleset.rules)} k8s_audit rules, {ruleset.macros} macros, {ruleset.lists} lists, "
          f"{ruleset.skipped_other_source} rules of other sources skipped, {len(ruleset.warnings)} warnings",
          file=sys.stderr)
    return EXIT_OK


def _read_input(name: str) -> str:
    if name == "-":
        return sys.stdin.buffer.read().decode("utf-8")
    with open(name, "rb") as fh:
        return fh.read().decode("utf-8")


def _payloads(text: str, name: str, batch: Batch):
    """A whole-file JSON document (Event, EventList, array), else JSON lines (one payload per line)."""
    stripped = text.strip()
    if not stripped:
        return
    try:
        yield json.loads(stripped)
        return
    except json.JSONDecodeError:
        pass
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError as exc:
            batch.skipped += 1
            batch.errors.append(f"{name}:{lineno}: invalid JSON: {exc.msg}")


def cmd_replay(args) -> int:
    try:
        ruleset = _load(args.rules) if args.rules else loader.load([DEFAULT_RULES])
        engine = Engine(ruleset, rule_matching=args.rule_matching, min_priority=args.priority)
    except (loader.RulesLoadError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    counts: Counter = Counter()
    total = Batch()
    out = sys.stdout
    for name in args.events:
        try:
            text = _read_input(name)
        except (OSError, UnicodeDecodeError) as exc:
            print(f"error: cannot read {name}: {exc}", file=sys.stderr)
            return EXIT_ERROR
        batch = Batch()
        for payload in _payloads(text, name, batch):
            before = len(batch.events)
            split_payload(payload, batch=batch, start_num=total_events(total))
            for evt in batch.events[before:]:
                for alert in engine.evaluate(evt):
                    counts[alert.rule] += 1
                    out.write(alert.to_json() + "\n")
        for err in batch.errors + ["event larger than maxEventSize"] * batch.oversize:
            print(f"{name}: {err}", file=sys.stderr)
        total.events.extend(batch.events)
        total.skipped += batch.skipped
        total.dropped += batch.dropped
    out.flush()
    print(f"events: {len(total.events)}, alerts: {sum(counts.values())}, skipped (not audit events): "
          f"{total.skipped}, dropped: {total.dropped + total.oversize}", file=sys.stderr)
    for rule, n in sorted(counts.items()):
        print(f"  {rule}: {n}", file=sys.stderr)
    return EXIT_OK


def total_events(batch: Batch) -> int:
    return len(batch.events)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edgeguard-rules", description="Falco k8s_audit rules: validate and replay.")
    sub = p.add_subparsers(dest="cmd", required=True)
    v = sub.add_parser("validate", help="check rules files (loaded in order, like falco -r a -r b)")
    v.add_argument("files", nargs="+", metavar="FILE")
    v.set_defaults(fn=cmd_validate)
    r = sub.add_parser("replay", help="evaluate audit events and print Falco JSON alerts")
    r.add_argument("--rules", action="append", metavar="FILE",
                   help="rules file or directory (repeatable, in order); default: the bundled upstream ruleset")
    r.add_argument("--rule-matching", choices=("first", "all"), default="first")
    r.add_argument("--priority", default="debug", help="minimum rule priority (Falco's 'priority' option)")
    r.add_argument("events", nargs="+", metavar="EVENTS", help="JSON-lines, EventList or array files; - for stdin")
    r.set_defaults(fn=cmd_replay)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return EXIT_ERROR if exc.code else EXIT_OK
    try:
        return args.fn(args)
    except BrokenPipeError:  # e.g. piped into head: not an error of ours
        sys.stderr.close()
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
