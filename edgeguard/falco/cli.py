"""edgeguard-rules: check Falco k8s_audit rules, list them, and replay audit events through them.

  edgeguard-rules validate [OPTIONS] [FILE|DIR]...
  edgeguard-rules list [--json] [OPTIONS] [FILE|DIR]...
  edgeguard-rules replay [--rules FILE|DIR]... [OPTIONS] EVENTS...

Rules load as audit-ingest loads them: the bundled upstream ruleset, then the function's ``rules.d``, then
the given files (the extra-rules file's place); ``--no-defaults`` loads only the given files. ``-c`` reads
falco.yaml-like settings (``rules:`` selection, ``append_output``, ``priority``, ``rule_matching``); ``-D``,
``-T`` and ``-t`` select rules as Falco's options do.

replay prints one Falco JSON alert per line on stdout and a count summary on stderr. It streams: JSON lines
are read, evaluated and written one at a time, so its memory does not grow with the input. Exit status: 2
when the rules or settings fail to load or an input cannot be read, 0 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from . import describe as describe_mod
from . import loader, rule_files
from .configuration import ConfigError, EngineConfig
from .engine import load_engine
from .lint import shadowed_rules
from .source import DEFAULT_MAX_EVENT_BYTES, batch_gc_paused, decode_payload, loads_line, split_payload

EXIT_OK = 0
EXIT_ERROR = 2
_FLUSH_EVERY = 512  # alerts buffered before a write to stdout


class _Failed(Exception):
    """A rules, settings or input problem that ends the command with EXIT_ERROR (message already printed)."""


def _config(args) -> EngineConfig:
    config = EngineConfig()
    if args.config:
        try:
            text = Path(args.config).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{args.config}: cannot read: {exc}") from None
        config = EngineConfig.from_yaml(text, args.config)
    config = config.with_cli_selection(args.disable or (), args.disable_tag or (), args.enable_tag or ())
    options = {"rule_matching": args.rule_matching, "priority": args.priority}
    return config.merged(EngineConfig.from_mapping({k: v for k, v in options.items() if v}, "command line"))


def _engine(args, extra):
    try:
        config = _config(args)
        files = rule_files.plan(extra, defaults=not args.no_defaults, rules_d=args.rules_d)
        if not files:
            raise ConfigError("no rules files: give at least one FILE or DIR with --no-defaults")
        engine = load_engine(rule_files.read(files), config)
    except loader.RulesLoadError as exc:
        for w in exc.warnings:
            print(f"warning: {w}", file=sys.stderr)
        print(f"error: {exc}", file=sys.stderr)
        raise _Failed from None
    except (ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise _Failed from None
    return engine, files


def _warnings(engine) -> list[str]:
    out = [str(w) for w in engine.ruleset.warnings]
    if engine.first:
        for later, earlier in shadowed_rules(engine.rules):
            out.append(
                f"{later.file}: rule '{later.name}': LOAD_RULE_NEVER_FIRES: under rule_matching: first this "
                f"rule can never fire: rule '{earlier.name}' ({earlier.file}) comes earlier and matches every "
                "event it matches"
            )
    return out


def cmd_validate(args) -> int:
    engine, files = _engine(args, args.files)
    given = rule_files.plan(args.files, defaults=False)
    warnings = _warnings(engine)
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    for f in given if not args.no_defaults else files:
        print(f"{f}: Ok")
    rs = engine.ruleset
    loaded = ", ".join(str(f) for f in files if f not in given) if not args.no_defaults else ""
    print(
        (f"loaded first, as audit-ingest does: {loaded}\n" if loaded else "")
        + f"{len(rs.rules)} k8s_audit rules ({len(engine.rules)} evaluated), {rs.macros} macros, {rs.lists} lists, "
        f"{rs.skipped_other_source} rules of other sources skipped, {len(warnings)} warnings",
        file=sys.stderr,
    )
    return EXIT_OK


def cmd_list(args) -> int:
    engine, _ = _engine(args, args.files)
    desc = describe_mod.describe(engine)
    if args.json:
        sys.stdout.write(json.dumps(desc, ensure_ascii=False) + "\n")
    else:
        sys.stdout.write(describe_mod.as_text(desc))
    return EXIT_OK


# ---- replay -----------------------------------------------------------------------------------------
class _Replay:
    """Counts and output of one replay; events are evaluated as they are read and not kept."""

    def __init__(self, engine, out, max_event_bytes=DEFAULT_MAX_EVENT_BYTES):
        self.engine = engine
        self.out = out
        self.interactive = False  # stdin: each line's alerts are written as soon as it is read
        self.limit = max_event_bytes
        self.counts: Counter = Counter()
        self.events = self.skipped = self.dropped = 0
        self.buf: list = []

    def payload(self, name, obj, raw_size, fits=frozenset()):
        batch = split_payload(obj, raw_size=raw_size, max_event_bytes=self.limit, start_num=self.events, fits=fits)
        match, alert_json, buf = self.engine.match, self.engine.alert_json, self.buf
        for evt in batch.events:
            for rule in match(evt):
                self.counts[rule.name] += 1
                buf.append(alert_json(rule, evt))
            if evt.oversize:
                self.error(name, "event larger than maxEventSize")
        self.events += len(batch.events)
        self.skipped += batch.skipped
        self.dropped += batch.dropped + batch.oversize
        for err in batch.errors:
            self.error(name, err)
        if len(buf) >= _FLUSH_EVERY or self.interactive:
            self.flush()
            if self.interactive:
                self.out.flush()

    def invalid(self, name, lineno, msg):
        self.skipped += 1
        print(f"{name}:{lineno}: invalid JSON: {msg}", file=sys.stderr)

    @staticmethod
    def error(name, msg):
        print(f"{name}: {msg}", file=sys.stderr)

    def flush(self):
        if self.buf:
            self.out.write("\n".join(self.buf) + "\n")
            self.buf.clear()

    def summary(self):
        self.flush()
        self.out.flush()
        print(
            f"events: {self.events}, alerts: {sum(self.counts.values())}, skipped (not audit events): "
            f"{self.skipped}, dropped: {self.dropped}",
            file=sys.stderr,
        )
        for rule, n in sorted(self.counts.items()):
            print(f"  {rule}: {n}", file=sys.stderr)


def _decode_line(raw: bytes):
    try:
        return loads_line(raw), None
    except json.JSONDecodeError as exc:
        return None, exc.msg
    except RecursionError:
        return None, "nested too deeply"


def _replay_stream(name: str, fh, rp: _Replay):
    """JSON lines one by one; a file whose first line is not a whole document is read as one document
    (an EventList or array over several lines), and if it is not one either, line by line again."""
    lines = iter(fh)
    head = []
    for raw in lines:
        head.append(raw)
        if raw.strip():
            break
    else:
        return
    obj, problem = _decode_line(head[-1])
    if problem is None:
        rp.payload(name, obj, len(head[-1]))
        for lineno, raw in enumerate(lines, len(head) + 1):
            if raw.strip():
                obj, problem = _decode_line(raw)
                if problem is None:
                    rp.payload(name, obj, len(raw))
                else:
                    rp.invalid(name, lineno, problem)
        return
    text = (b"".join(head) + b"".join(lines)).decode("utf-8")
    doc = text.strip()
    try:
        obj, fits = decode_payload(doc, rp.limit)  # with the raw size of each EventList item
        rp.payload(name, obj, len(doc.encode("utf-8")), fits)
        return
    except ValueError:
        pass
    try:
        obj = json.loads(doc)  # what replay always accepted (NaN included)
        rp.payload(name, obj, len(doc.encode("utf-8")))
        return
    except (json.JSONDecodeError, RecursionError):
        pass
    for lineno, line in enumerate(text.split("\n"), 1):
        if line.strip():
            obj, problem = _decode_line(line.encode("utf-8"))
            if problem is None:
                rp.payload(name, obj, len(line.encode("utf-8")))
            else:
                rp.invalid(name, lineno, problem)


def cmd_replay(args) -> int:
    engine, _ = _engine(args, args.rules or ())
    rp = _Replay(engine, sys.stdout)
    with batch_gc_paused():  # audit JSON is acyclic: reference counting frees it
        for name in args.events:
            try:
                if name == "-":
                    rp.interactive = True
                    _replay_stream(name, sys.stdin.buffer, rp)
                    rp.interactive = False
                else:
                    with open(name, "rb") as fh:
                        _replay_stream(name, fh, rp)
            except (OSError, UnicodeDecodeError) as exc:
                rp.flush()
                print(f"error: cannot read {name}: {exc}", file=sys.stderr)
                return EXIT_ERROR
    rp.summary()
    return EXIT_OK


# ---- arguments ---------------------------------------------------------------------------------------
def _rules_options() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("rules (loaded as audit-ingest loads them)")
    g.add_argument(
        "--no-defaults",
        action="store_true",
        help="load only the given files, not the bundled ruleset and the function's rules.d",
    )
    g.add_argument(
        "--rules-d",
        type=Path,
        default=rule_files.FUNCTION_RULES_D,
        metavar="DIR",
        help="the function's rules.d (default: %(default)s)",
    )
    g.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        help="falco.yaml-like settings: rules (selection), append_output, priority, rule_matching",
    )
    g.add_argument(
        "-D",
        dest="disable",
        action="append",
        metavar="SUBSTRING",
        help="disable the rules whose name contains SUBSTRING (repeatable)",
    )
    g.add_argument("-T", dest="disable_tag", action="append", metavar="TAG", help="disable the rules tagged TAG")
    g.add_argument(
        "-t",
        dest="enable_tag",
        action="append",
        metavar="TAG",
        help="evaluate only the rules tagged TAG (not with -D/-T)",
    )
    g.add_argument("--rule-matching", choices=("first", "all"), help="Falco's rule_matching (default: first)")
    g.add_argument("--priority", help="minimum rule priority (Falco's 'priority' option)")
    return p


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edgeguard-rules", description="Falco k8s_audit rules: validate, list, replay.")
    sub = p.add_subparsers(dest="cmd", required=True)
    common = _rules_options()
    v = sub.add_parser("validate", parents=[common], help="check rules files (like falco -V)")
    v.add_argument("files", nargs="*", metavar="FILE|DIR")
    v.set_defaults(fn=cmd_validate)
    ls = sub.add_parser("list", parents=[common], help="describe the loaded rules (like falco -L)")
    ls.add_argument("--json", action="store_true", help="Falco's describe_rule JSON instead of the text table")
    ls.add_argument("files", nargs="*", metavar="FILE|DIR")
    ls.set_defaults(fn=cmd_list)
    r = sub.add_parser("replay", parents=[common], help="evaluate audit events and print Falco JSON alerts")
    r.add_argument(
        "--rules",
        action="append",
        metavar="FILE|DIR",
        help="rules file or directory after the defaults (repeatable, in order)",
    )
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
    except _Failed:
        return EXIT_ERROR
    except BrokenPipeError:  # e.g. piped into head: not an error of ours
        sys.stderr.close()
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
