"""The change engine: dry-run, diffs, backups, modes, redaction, prompts, state."""

from __future__ import annotations

import io
import json
import os
import stat

import pytest

from edgeguard_bootstrap.engine import HIDDEN, STATE_FILE, BootstrapError, Check, Ctx, Refused


def make(tmp_path, **kw):
    out = io.StringIO()
    return Ctx(str(tmp_path), out=out, env={"PATH": str(tmp_path / "nobin")}, **kw), out


def mode_of(p):
    return stat.S_IMODE(os.stat(p).st_mode)


def test_dry_run_prints_a_unified_diff_and_writes_nothing(tmp_path):
    ctx, out = make(tmp_path, dry_run=True)
    assert ctx.write_file("/etc/x/conf.yaml", "a: 1\n") is True
    text = out.getvalue()
    assert "[would change] create /etc/x/conf.yaml" in text
    assert "+++ b/etc/x/conf.yaml" in text and "+a: 1" in text
    assert not (tmp_path / "etc").exists()
    assert not (tmp_path / STATE_FILE.lstrip("/")).exists()
    assert ctx.changes == 1


def test_second_identical_write_is_not_a_change(tmp_path):
    ctx, _ = make(tmp_path)
    assert ctx.write_file("/etc/x.yaml", "a: 1\n", mode=0o640) is True
    ctx2, out2 = make(tmp_path)
    assert ctx2.write_file("/etc/x.yaml", "a: 1\n", mode=0o640) is False
    assert ctx2.changes == 0 and "unchanged" in out2.getvalue()
    assert mode_of(tmp_path / "etc/x.yaml") == 0o640


def test_mode_drift_alone_is_repaired(tmp_path):
    ctx, _ = make(tmp_path)
    ctx.write_file("/etc/x.yaml", "a\n", mode=0o600)
    os.chmod(tmp_path / "etc/x.yaml", 0o644)
    ctx2, out2 = make(tmp_path)
    assert ctx2.write_file("/etc/x.yaml", "a\n", mode=0o600) is True
    assert "chmod 644 -> 600" in out2.getvalue()
    assert mode_of(tmp_path / "etc/x.yaml") == 0o600


def test_replacing_someone_elses_file_keeps_a_backup_and_records_it(tmp_path):
    target = tmp_path / "etc/k3s.yaml"
    target.parent.mkdir(parents=True)
    target.write_text("original: true\n")
    ctx, out = make(tmp_path)
    ctx.write_file("/etc/k3s.yaml", "ours: true\n")
    entry = ctx.state["files"]["/etc/k3s.yaml"]
    assert entry["created"] is False and entry["backup"]
    assert (tmp_path / entry["backup"].lstrip("/")).read_text() == "original: true\n"
    assert mode_of(tmp_path / entry["backup"].lstrip("/")) == 0o600
    assert "-original: true" in out.getvalue() and "+ours: true" in out.getvalue()
    # Our own later update does not back up our own content again.
    ctx2, out2 = make(tmp_path)
    ctx2.write_file("/etc/k3s.yaml", "ours: 2\n")
    assert ctx2.state["files"]["/etc/k3s.yaml"]["backup"] == entry["backup"]
    assert "backup of the previous" not in out2.getvalue()
    saved = json.loads((tmp_path / STATE_FILE.lstrip("/")).read_text())
    assert saved["files"]["/etc/k3s.yaml"]["backup"] == entry["backup"]


def test_secret_files_are_0600_in_a_private_dir_and_never_shown(tmp_path):
    ctx, out = make(tmp_path)
    ctx.write_file("/var/lib/edgeguard/secrets/tok", b"s3cr3t-value-123", secret=True, dir_mode=0o700)
    p = tmp_path / "var/lib/edgeguard/secrets/tok"
    assert mode_of(p) == 0o600
    assert mode_of(p.parent) == 0o700
    assert "s3cr3t-value-123" not in out.getvalue()
    assert HIDDEN in out.getvalue()


def test_known_secret_values_are_masked_in_diffs_of_ordinary_files(tmp_path):
    ctx, out = make(tmp_path)
    ctx.add_secret("tok-ABCDEF-123")
    ctx.write_file("/etc/cfg.yaml", "url: http://gw/function/x?token=tok-ABCDEF-123\n", mode=0o600)
    assert "tok-ABCDEF-123" not in out.getvalue()
    assert f"token={HIDDEN}" in out.getvalue()
    assert (tmp_path / "etc/cfg.yaml").read_text().endswith("token=tok-ABCDEF-123\n")


def test_failed_command_error_message_is_redacted(tmp_path):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "leaky").write_text('#!/bin/sh\necho "bad token $1" >&2\nexit 3\n')
    (fake / "leaky").chmod(0o755)
    out = io.StringIO()
    ctx = Ctx(str(tmp_path), out=out, env={"PATH": f"{fake}:/usr/bin:/bin"})
    ctx.add_secret("hunter2-hunter2")
    with pytest.raises(BootstrapError) as err:
        ctx.run(["leaky", "hunter2-hunter2"])
    assert "hunter2-hunter2" not in str(err.value)
    assert "exit status 3" in str(err.value)
    assert "hunter2-hunter2" not in out.getvalue()


def test_dry_run_does_not_execute_mutating_commands(tmp_path):
    marker = tmp_path / "ran"
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "touchit").write_text(f"#!/bin/sh\ntouch {marker}\n")
    (fake / "touchit").chmod(0o755)
    ctx = Ctx(str(tmp_path), dry_run=True, out=io.StringIO(), env={"PATH": f"{fake}:/usr/bin:/bin"})
    assert ctx.run(["touchit"]) is None
    assert not marker.exists()
    ctx.query(["touchit"])  # read-only queries do run in a dry run
    assert marker.exists()


def test_missing_command_is_a_127_result_not_a_crash(tmp_path):
    ctx, _ = make(tmp_path)
    assert ctx.query(["definitely-not-here"]).returncode == 127


class _Tty(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize("answer,expected", [("y\n", True), ("yes\n", True), ("n\n", False), ("\n", False)])
def test_confirm_asks_on_a_terminal(tmp_path, answer, expected):
    ctx = Ctx(str(tmp_path), out=io.StringIO(), stdin=_Tty(answer), env={})
    assert ctx.confirm("restart?") is expected


def test_confirm_without_terminal_is_no_and_yes_flag_is_yes(tmp_path):
    assert Ctx(str(tmp_path), out=io.StringIO(), stdin=io.StringIO("y\n"), env={}).confirm("q") is False
    assert Ctx(str(tmp_path), out=io.StringIO(), stdin=io.StringIO(""), yes=True, env={}).confirm("q") is True
    assert Ctx(str(tmp_path), out=io.StringIO(), stdin=_Tty("y\n"), dry_run=True, env={}).confirm("q") is False


def test_require_refuses_on_fail_unless_force(tmp_path):
    checks = [Check("a", "pass", "fine"), Check("b", "fail", "broken\nhow to fix")]
    ctx, out = make(tmp_path)
    with pytest.raises(Refused) as err:
        ctx.require(checks)
    assert "b" in str(err.value) and "--force" in str(err.value)
    assert "FAIL" in out.getvalue() and "how to fix" in out.getvalue()
    forced, fout = make(tmp_path, force=True)
    assert forced.require(checks) is False
    assert "because of --force" in fout.getvalue()
    assert make(tmp_path)[0].require([Check("a", "warn", "meh")]) is True


def test_corrupt_state_file_is_reported_not_overwritten(tmp_path):
    p = tmp_path / STATE_FILE.lstrip("/")
    p.parent.mkdir(parents=True)
    p.write_text("{not json")
    with pytest.raises(BootstrapError):
        make(tmp_path)
    assert p.read_text() == "{not json"


def test_a_second_concurrent_run_is_refused(node):
    import fcntl

    from edgeguard_bootstrap.cli import LOCK_FILE

    lock = node.path(LOCK_FILE)
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_WRONLY | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        code, out = node.run("openfaas")
        assert code == 2 and "another edgeguard-bootstrap is running" in out
        assert node.mutating_calls() == []
        code, out = node.run("openfaas", "--dry-run")  # a dry run changes nothing, so it may run alongside
        assert code == 0
    finally:
        os.close(fd)
    code, out = node.run("openfaas")
    assert code == 0, out


def test_guard_catches_system_writes():
    """conftest's autouse guard is live: system paths cannot be written by any test here."""
    with pytest.raises(AssertionError):
        os.open("/etc/edgeguard-guard-probe", os.O_WRONLY | os.O_CREAT)
    with pytest.raises(AssertionError):
        open("/var/lib/edgeguard-guard-probe", "w")
    with pytest.raises(AssertionError):
        os.mkdir("/etc/edgeguard-guard-probe")
