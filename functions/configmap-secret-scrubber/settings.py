"""The scrubber's settings: one object, read once at start-up from stack.yml's environment.

A bad value (``scrub_mode=yolo``, a template without ``{configmap}``) is found there and answered 503
"configmap-secret-scrubber is misconfigured: ..." on every request (config.Startup), before anything
is read from the cluster. The defaults are what a test or the bench gets from ``Settings()``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .edgeguard import config

DEFAULT_RULES = frozenset({"Create/Modify Configmap With Private Credentials"})
# Also enforced by RBAC: the write Role is never bound in these (deploy/rbac/configmap-secret-scrubber-namespace.yaml).
# openfaas-fn holds every function's OpenFaaS secrets.
DEFAULT_REPORT_ONLY = frozenset({"kube-system", "kube-public", "kube-node-lease", "openfaas", "openfaas-fn"})


def _csv(name: str, default: frozenset = frozenset()) -> frozenset:
    raw = config.env_str(name)
    if raw is None:
        return default
    return frozenset(x.strip() for x in raw.split(",") if x.strip())


@dataclass
class Settings:
    mode: str = "report"  # report | move
    secret_name_template: str = "{configmap}-credentials"
    replacement_name_template: str = "{configmap}-v2"  # an immutable ConfigMap's replacement (allow_immutable)
    allow_immutable: bool = False
    rollout_timeout: float = 60.0
    rollout_poll: float = 1.0
    retries: int = 3  # re-reads after a lost race, per write
    allow: frozenset = frozenset()  # empty: every namespace
    deny: frozenset = frozenset()
    report_only: frozenset = DEFAULT_REPORT_ONLY
    max_configmaps: int = 200
    max_moves: int = 10
    rules: frozenset = field(default=DEFAULT_RULES)
    max_body: int = 1048576
    rate_per_minute: int = 30
    run_budget: float = 40.0  # seconds a run may start new ConfigMaps for
    kube_timeout: float = 10.0
    max_queued_jobs: int = 16  # accepted runs waiting for the worker (jobs.py)
    wait_seconds: float = 45.0  # ?wait=1: how long a POST waits for its job

    @classmethod
    def from_env(cls) -> Settings:
        # Not `mode`: of-watchdog reads that itself (the template sets mode=http), see docs "Settings".
        mode = (config.env_str("scrub_mode", "report") or "report").strip().lower()
        if mode not in ("report", "move"):
            raise config.ConfigError(f"environment variable scrub_mode={mode!r} must be 'report' or 'move'")
        s = cls(
            mode=mode,
            secret_name_template=config.env_str("secret_name_template") or cls.secret_name_template,
            replacement_name_template=config.env_str("replacement_name_template") or cls.replacement_name_template,
            allow_immutable=config.env_bool("allow_immutable", False),
            rollout_timeout=config.env_float("rollout_timeout_seconds", cls.rollout_timeout),
            rollout_poll=config.env_float("rollout_poll_seconds", cls.rollout_poll),
            allow=_csv("namespaces_allow"),
            deny=_csv("namespaces_deny"),
            report_only=_csv("report_only_namespaces", DEFAULT_REPORT_ONLY),
            max_configmaps=config.env_int("max_configmaps_per_run", cls.max_configmaps, minimum=1),
            max_moves=config.env_int("max_moves_per_run", cls.max_moves, minimum=0),
            rules=_csv("trigger_rules") or DEFAULT_RULES,
            max_body=config.env_int("max_body_bytes", cls.max_body, minimum=1024),
            rate_per_minute=config.env_int("rate_limit_per_minute", cls.rate_per_minute, minimum=1),
            run_budget=config.env_float("run_budget_seconds", cls.run_budget),
            kube_timeout=config.env_float("kube_timeout_seconds", cls.kube_timeout),
            max_queued_jobs=config.env_int("max_queued_jobs", cls.max_queued_jobs, minimum=1),
            wait_seconds=config.env_float("wait_seconds", cls.wait_seconds),
        )
        for t in ("secret_name_template", "replacement_name_template"):
            if "{configmap}" not in getattr(s, t):
                raise config.ConfigError(f"environment variable {t} must contain {{configmap}}")
        return s

    def allowed(self, ns: str) -> bool:
        if ns in self.deny:
            return False
        return not self.allow or ns in self.allow

    def report_only_reason(self, ns: str) -> str | None:
        if ns in self.report_only:
            return f"namespace {ns} is report-only (report_only_namespaces)"
        return None
