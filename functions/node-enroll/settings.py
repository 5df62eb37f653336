"""node-enroll configuration: environment (stack.yml) and OpenFaaS secrets.

The environment is read once, at start-up (edgeguard.config.Startup in the handler), in two parts:
``load_protection`` (what checking a signature needs: the body limit, the replay window, the rate
limits) and ``load`` (everything else). A bad value in either makes every request answer 503, but
an unauthenticated caller only ever learns that the function is misconfigured, never which setting
(see the handler). Secrets (the key, the admin token, the kubeconfig) and the CA they may carry are
read per request, so a rotated secret takes effect without a restart.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass

from . import joinscript, policy, tokens
from .edgeguard import config, kube
from .edgeguard.config import ConfigError

KEY_SECRET = "node-enroll-key"
ADMIN_SECRET = "node-enroll-admin-token"
KUBECONFIG_SECRET = "node-enroll-kubeconfig"
INCLUSTER_CA = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"


@dataclass(frozen=True)
class Protection:
    """What POST /enroll needs before the signature is checked."""

    max_body_bytes: int
    max_clock_skew: int
    max_clock_ahead: int
    nonce_cache_size: int
    rate_limit_per_minute: int
    rate_limit_global_per_minute: int
    rate_limit_unsigned_per_minute: int


@dataclass(frozen=True)
class Settings:
    ttl: int
    max_body_bytes: int
    max_outstanding: int
    allowed_prefixes: tuple
    allowlist: tuple
    bootstrap_groups: str
    falco_pod_selector: str
    script: joinscript.ScriptSettings
    server_url: str
    ca_hash: str | None  # k3s_ca_hash when set; otherwise ca_hash() finds it per request
    ca_file: str | None  # k3s_ca_file


def load_protection() -> Protection:
    return Protection(
        max_body_bytes=max_body_bytes(),
        max_clock_skew=config.env_int("max_clock_skew", 300, minimum=1),
        max_clock_ahead=config.env_int("max_clock_ahead", 30, minimum=0),
        nonce_cache_size=config.env_int("nonce_cache_size", 10000, minimum=10),
        rate_limit_per_minute=config.env_int("rate_limit_per_minute", 10, minimum=1),
        rate_limit_global_per_minute=config.env_int("rate_limit_global_per_minute", 60, minimum=1),
        rate_limit_unsigned_per_minute=config.env_int("rate_limit_unsigned_per_minute", 60, minimum=1),
    )


def load() -> Settings:
    ttl = int(config.parse_duration(config.env_str("token_ttl", "1h"), "token_ttl"))
    if not 60 <= ttl <= 7 * 86400:
        raise ConfigError(f"token_ttl must be between 1m and 168h (got {ttl}s)")
    try:
        prefixes = policy.parse_prefixes(config.env_str("allowed_label_prefixes", "node.edgeguard.io/"))
        allowlist = policy.parse_allowlist(_allowlist_text())
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    groups = config.env_str("bootstrap_groups", tokens.DEFAULT_GROUP)
    if not all(tokens.GROUP_RE.fullmatch(g) for g in groups.split(",")):
        raise ConfigError("bootstrap_groups must be comma-separated groups starting with system:bootstrappers:")
    falco_mode = config.env_str("falco_mode", "helm")
    if falco_mode not in joinscript.FALCO_MODES:
        raise ConfigError(f"falco_mode must be one of {', '.join(joinscript.FALCO_MODES)}")
    script = joinscript.ScriptSettings(
        install_url=_https(config.env_str("k3s_install_url", "https://get.k3s.io"), "k3s_install_url"),
        k3s_version=config.env_str("k3s_version"),
        k3s_channel=config.env_str("k3s_channel"),
        falco_mode=falco_mode,
        falco_host_command=config.env_str("falco_host_command", joinscript.DEFAULT_FALCO_HOST_COMMAND),
        public_gateway_url=config.env_str("public_gateway_url"),
        extra_agent_args=tuple((config.env_str("k3s_agent_args", "") or "").split()),
    )
    _check_script(script)
    return Settings(
        ttl=ttl,
        max_body_bytes=max_body_bytes(),
        max_outstanding=config.env_int("max_outstanding_tokens", 20, minimum=1),
        allowed_prefixes=prefixes,
        allowlist=allowlist,
        bootstrap_groups=groups,
        falco_pod_selector=config.env_str("falco_pod_selector", "app.kubernetes.io/name=falco"),
        script=script,
        server_url=server_url(),
        ca_hash=_configured_ca_hash(),
        ca_file=config.env_str("k3s_ca_file"),
    )


def max_body_bytes() -> int:
    return config.env_int("max_body_bytes", 65536, minimum=1024)


def _check_script(script: joinscript.ScriptSettings) -> None:
    # Fail before a token is minted, not while rendering its script.
    try:
        joinscript.agent_exec("node", {}, [], script.extra_agent_args)
        if script.falco_mode == "host":
            if not script.public_gateway_url:
                raise ValueError("falco_mode=host needs public_gateway_url (the gateway as nodes reach it)")
            joinscript.falco_host_argv(
                script.falco_host_command, gateway_url=script.public_gateway_url, node_name="node"
            )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _allowlist_text() -> str | None:
    path = config.env_str("allowlist_file")
    if path:
        try:
            with open(path, encoding="utf-8") as fh:
                return fh.read()
        except OSError as exc:
            raise ConfigError(f"allowlist_file {path!r} cannot be read: {exc.strerror}") from None
    return config.env_str("allowlist")


def _https(url: str, name: str) -> str:
    if not url.startswith("https://"):
        raise ConfigError(f"{name} must be an https:// URL (got {url!r})")
    return url


def server_url() -> str:
    url = config.env_str("k3s_server_url")
    if not url:
        raise ConfigError("k3s_server_url is not set: the https://<server>:6443 address new nodes join")
    return _https(url.rstrip("/"), "k3s_server_url")


def _configured_ca_hash() -> str | None:
    configured = config.env_str("k3s_ca_hash")
    if not configured:
        return None
    configured = configured.strip().lower()
    if not tokens.CA_HASH_RE.fullmatch(configured):
        raise ConfigError("k3s_ca_hash must be 64 hex characters (sha256 of the server CA)")
    return configured


def ca_hash(cfg: Settings) -> tuple[str, str]:
    """(hash, where it came from). Sources, first match wins: k3s_ca_hash, k3s_ca_file,
    the kubeconfig secret's cluster CA, the in-cluster service-account ca.crt. The file and the
    secret are read per request: either may be replaced without a restart."""
    if cfg.ca_hash:
        return cfg.ca_hash, "k3s_ca_hash"
    path = cfg.ca_file
    if path:
        try:
            with open(path, "rb") as fh:
                return _hash(fh.read(), "k3s_ca_file"), "k3s_ca_file"
        except OSError as exc:
            raise ConfigError(f"k3s_ca_file {path!r} cannot be read: {exc.strerror}") from None
    data = _kubeconfig_ca()
    if data is not None:
        return _hash(data, KUBECONFIG_SECRET), f"secret {KUBECONFIG_SECRET}"
    if os.environ.get("KUBERNETES_SERVICE_HOST") and os.path.exists(INCLUSTER_CA):
        with open(INCLUSTER_CA, "rb") as fh:
            return _hash(fh.read(), INCLUSTER_CA), "in-cluster ca.crt"
    raise ConfigError(
        "no server CA to hash: set k3s_ca_hash or k3s_ca_file, or give the kubeconfig secret certificate-authority-data"
    )


def _hash(data: bytes, where: str) -> str:
    try:
        return tokens.ca_hash(data)
    except tokens.CAError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _kubeconfig_ca() -> bytes | None:
    # load_kubeconfig also refuses insecure-skip-tls-verify and registers credentials for redaction.
    doc = kube.load_kubeconfig(KUBECONFIG_SECRET)
    if doc is None:
        return None
    current = doc.get("current-context")
    ctx = next((c.get("context") or {} for c in doc.get("contexts") or [] if c.get("name") == current), {})
    clusters = doc["clusters"]
    cluster = next((c.get("cluster") or {} for c in clusters if c.get("name") == ctx.get("cluster")), None)
    if cluster is None and len(clusters) == 1:
        cluster = clusters[0].get("cluster") or {}
    if not cluster:
        return None
    if cluster.get("certificate-authority-data"):
        try:
            return base64.b64decode(cluster["certificate-authority-data"], validate=True)
        except ValueError:
            raise ConfigError(f"secret {KUBECONFIG_SECRET}: certificate-authority-data is not base64") from None
    if cluster.get("certificate-authority"):
        try:
            with open(cluster["certificate-authority"], "rb") as fh:
                return fh.read()
        except OSError:
            return None
    return None
