"""Typed settings. The library takes a :class:`Settings`; only the faces read the environment."""

from __future__ import annotations

import os
import re
import tomllib
import zoneinfo
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from tether.durations import MAX_DURATION, parse_duration
from tether.errors import InvalidRequest

__all__ = [
    "CONFIG_FILE",
    "DEFAULT_HOME",
    "LABELS",
    "AuditSettings",
    "DetectSettings",
    "EgressSettings",
    "GuardSettings",
    "IdpConfig",
    "Settings",
    "SinkConfig",
    "VaultSettings",
]

CONFIG_FILE = "tether.toml"
DEFAULT_HOME = Path(".tether")
_TRUST_DOMAIN = re.compile(r"[a-z0-9]([a-z0-9.-]{0,253}[a-z0-9])?")


def _duration(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return parse_duration(value)
    except InvalidRequest as exc:
        raise ValueError(exc.description) from None


Duration = Annotated[timedelta, BeforeValidator(_duration)]


def _wait(value: Any) -> Any:
    """A duration that may also be zero (``"0s"``: do not wait)."""
    if isinstance(value, str) and value.strip() in ("0", "0s", "0m", "0h", "0d"):
        return timedelta(0)
    return _duration(value)


Wait = Annotated[timedelta, BeforeValidator(_wait)]


def _period(value: timedelta) -> timedelta:
    if value <= timedelta(0) or value > MAX_DURATION or value.microseconds:
        raise ValueError(
            "must be a whole number of seconds, above zero and at most 3650d "
            "(write it as 90s, 15m, 8h or 30d)"
        )
    return value


# A detector period (learning, windows, dormancy): what Duration takes, and only what the
# duration syntax can say, whichever way it is written (a bare number is seconds): a zero,
# negative or fractional window would divide time into nothing, or into one-second slices.
Period = Annotated[timedelta, BeforeValidator(_duration), AfterValidator(_period)]


class IdpConfig(BaseModel):
    """A trusted human identity provider whose JWTs the admin API accepts."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    issuer: str = Field(min_length=1)
    audience: str = Field(min_length=1)
    jwks_file: Path | None = None
    jwks_url: str | None = None
    email_claim: str = "email"
    groups_claim: str = "groups"

    @model_validator(mode="after")
    def _one_key_source(self) -> IdpConfig:
        if (self.jwks_file is None) == (self.jwks_url is None):
            raise ValueError("an [[idp]] needs exactly one of jwks_file or jwks_url")
        return self


class SinkConfig(BaseModel):
    """A streaming SIEM sink (``[[audit.sinks]]``): where audit events go as they happen."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$")
    kind: Literal["file", "syslog", "webhook"]
    format: Literal["ocsf", "cef", "jsonl"] = "ocsf"
    path: Path | None = None  # file
    host: str | None = None  # syslog
    port: int | None = Field(default=None, ge=1, le=65535)
    protocol: Literal["udp", "tcp"] = "udp"
    url: str | None = None  # webhook
    headers: dict[str, str] = Field(default_factory=dict)
    batch_size: int = Field(default=100, ge=1, le=10_000)
    timeout_ms: int = Field(default=5_000, ge=10, le=120_000)
    retry_initial_ms: int = Field(default=200, ge=1)
    retry_max_ms: int = Field(default=30_000, ge=1)

    @model_validator(mode="after")
    def _where(self) -> SinkConfig:
        needs = {"file": ("path",), "syslog": ("host", "port"), "webhook": ("url",)}[self.kind]
        missing = [n for n in needs if getattr(self, n) is None]
        if missing:
            raise ValueError(f"a {self.kind} sink needs {' and '.join(missing)}")
        if self.url is not None and not self.url.startswith(("https://", "http://")):
            raise ValueError("a webhook url must be http(s)")
        return self


class AuditSettings(BaseModel):
    """``[audit]``: checkpoint cadence, the checkpoint origin, and SIEM sinks."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    origin: str | None = Field(default=None, pattern=r"^[^\s+]+$")
    checkpoint_every: int = Field(default=1000, ge=1)
    checkpoint_interval_ms: int = Field(default=5000, ge=10)
    verifier_keys: tuple[str, ...] = ()  # more audit keys to trust (other homes' signers)
    sinks: tuple[SinkConfig, ...] = ()

    @model_validator(mode="after")
    def _unique(self) -> AuditSettings:
        names = [s.name for s in self.sinks]
        if len(names) != len(set(names)):
            raise ValueError("audit sink names must be unique")
        return self


class VaultSettings(BaseModel):
    """``[vault]``: the OpenBao / HashiCorp Vault that brokers agents' credentials."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    address: str | None = None  # e.g. http://127.0.0.1:8200; None: no vault configured
    token: str | None = Field(default=None, repr=False)
    role_id: str | None = None  # AppRole, instead of token
    secret_id: str | None = Field(default=None, repr=False)
    namespace: str | None = None
    kv_mount: str = Field(default="secret", pattern=r"^[A-Za-z0-9_.-]+$")
    timeout_ms: int = Field(default=5_000, ge=10, le=120_000)
    cache_ms: int = Field(default=30_000, ge=0, le=3_600_000)  # upstream credentials only
    verify_tls: bool = True
    # Rotation of a KV secret: the command prints the new value on stdout (it gets the
    # path and field as arguments); without one, a random API key is generated.
    rotation_command: tuple[str, ...] = ()
    dynamic_ttl_max: Duration = timedelta(hours=1)

    @model_validator(mode="after")
    def _auth(self) -> VaultSettings:
        if self.address is None:
            return self
        if not self.address.startswith(("https://", "http://")):
            raise ValueError("[vault] address must be an http(s) URL")
        if (self.token is None) == (self.role_id is None):
            raise ValueError("[vault] needs exactly one of token or role_id (+ secret_id)")
        if self.role_id is not None and self.secret_id is None:
            raise ValueError("[vault] role_id needs secret_id")
        return self

    @property
    def configured(self) -> bool:
        return self.address is not None


Severity = Literal["low", "medium", "high", "critical"]
SEVERITIES: tuple[Severity, ...] = ("low", "medium", "high", "critical")
Response = Literal["alert", "suspend", "kill", "kill-cascade"]
DETECTORS = (
    "first_use",
    "new_delegation",
    "call_rate",
    "result_volume",
    "enumeration",
    "denial_burst",
    "off_hours",
    "dormant_wake",
    "credential_spike",
    "unowned_actor",
)


class DetectorParams(BaseModel):
    """What every detector takes (``[detect.detectors.NAME]``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    severity: Severity | None = None  # None: the detector's own (documented) severity


class FirstUseParams(DetectorParams):
    """``first_use``: a tool, resource, upstream server or token audience never used."""

    kinds: tuple[Literal["tool", "resource", "server", "audience"], ...] = (
        "tool",
        "resource",
        "server",
        "audience",
    )


class SpikeParams(DetectorParams):
    """A robust spike against the agent's own history of windows (median/MAD)."""

    window: Period = timedelta(minutes=5)
    history: int = Field(default=288, ge=8, le=10_000)  # windows remembered
    # spike: above median + mad_k * 1.4826 * MAD ...
    mad_k: float = Field(default=8.0, gt=0, allow_inf_nan=False)
    factor: float = Field(default=3.0, ge=1, allow_inf_nan=False)  # ... and factor * median
    # ... and at least this much in the window
    min_count: float = Field(default=30, ge=1, allow_inf_nan=False)


class EnumerationParams(DetectorParams):
    window: Period = timedelta(minutes=10)
    min_distinct: int = Field(default=15, ge=2)  # distinct tools/resources in one window
    # ... and factor * the most the agent ever did
    factor: float = Field(default=3.0, ge=1, allow_inf_nan=False)


class DenialParams(DetectorParams):
    window: Period = timedelta(minutes=5)
    min_denials: int = Field(default=5, ge=1)
    min_ratio: float = Field(
        default=0.5, gt=0, le=1, allow_inf_nan=False
    )  # denials / decisions in the window


class OffHoursParams(DetectorParams):
    min_share: float = Field(
        default=0.005, ge=0, lt=1, allow_inf_nan=False
    )  # of the agent's activity in that hour
    neighbours: int = Field(default=1, ge=0, le=6)  # hours either side that also count


class DormantParams(DetectorParams):
    after: Period = timedelta(days=14)


class Detectors(BaseModel):
    """``[detect.detectors]``: each detector's parameters (see the README's table)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    first_use: FirstUseParams = FirstUseParams()
    new_delegation: DetectorParams = DetectorParams()
    call_rate: SpikeParams = SpikeParams()
    result_volume: SpikeParams = SpikeParams(min_count=1_000_000)  # bytes per window
    enumeration: EnumerationParams = EnumerationParams()
    denial_burst: DenialParams = DenialParams()
    off_hours: OffHoursParams = OffHoursParams()
    dormant_wake: DormantParams = DormantParams()
    credential_spike: SpikeParams = SpikeParams(window=timedelta(minutes=15), min_count=10)
    unowned_actor: DetectorParams = DetectorParams()


class DetectSettings(BaseModel):
    """``[detect]``: the behaviour detector, its learning, its detectors and the response
    policy (``[detect.response]``: a detector name or a severity -> ``alert``,
    ``suspend``, ``kill`` or ``kill-cascade``; a detector's own entry wins over its
    severity's, and ``default`` over nothing)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    learning: Period = timedelta(days=7)  # per agent, from its first event: no novelty alerts
    timezone: str = "UTC"  # for active hours
    batch_size: int = Field(default=5_000, ge=1, le=100_000)  # events per transaction
    interval_ms: int = Field(default=500, ge=10, le=60_000)
    max_actions_per_hour: int = Field(default=10, ge=0)  # the circuit breaker
    max_alerts_per_agent_hour: int = Field(default=20, ge=1, le=100_000)  # then one summary
    response: dict[str, Response] = Field(default_factory=dict)
    detectors: Detectors = Detectors()

    @model_validator(mode="after")
    def _check(self) -> DetectSettings:
        try:
            zoneinfo.ZoneInfo(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"timezone: unknown time zone {self.timezone!r}") from None
        for key in self.response:
            if key != "default" and key not in DETECTORS and key not in SEVERITIES:
                raise ValueError(
                    f"response.{key}: not a detector ({', '.join(DETECTORS)}), a severity "
                    f"({', '.join(SEVERITIES)}) or 'default'"
                )
        return self

    def response_for(self, detector: str, severity: str) -> Response:
        """What to do on an alert of ``detector`` at ``severity`` (``alert`` unless said)."""
        for key in (detector, severity, "default"):
            if key in self.response:
                return self.response[key]
        return "alert"


FlowMode = Literal["deny", "approval", "off"]
LABELS = ("sensitive", "untrusted", "egress", "destructive", "plain")


class GuardSettings(BaseModel):
    """``[guard]``: what the gateway does with tool arguments, labels, the data-flow rule,
    budgets and approvals (issue 17; see docs/guard.md).

    - ``unlabelled_tool`` / ``unlabelled_resource`` / ``unlabelled_prompt``: the labels an
      item counts as while nobody has labelled it (``tether gateway label``). The default is
      safe: an unclassified tool may take in untrusted content and may send data out.
    - ``trifecta``: the built-in data-flow guardrail (``tether-trifecta``): once the work
      (a token family, or an agent and person within ``flow_window``) has read
      ``sensitive`` data and taken in ``untrusted`` content, an ``egress`` call is denied
      (``deny``), held for approval (``approval``) or let through (``off``).
    - ``args_max_bytes`` / ``args_max_depth`` / ``args_max_values``: arguments larger or
      deeper than these cannot be decided on (denied with the reason) when a policy reads
      ``context.args``.
    - ``approval_ttl``: how long a pending or granted approval stays usable;
      ``approval_wait``: how long a held call waits for its approval before it is answered
      with the pending approval's ID (0: never waits; a request that carries an MCP
      progress token hears ``notifications/progress`` meanwhile, where the path can send
      them: docs/guard-approvals.md);
      ``approval_webhook``: a URL told of each new pending approval (unset: none).
    - ``scan_results``: look for secrets (detect-secrets, AI keys) in tool results and
      redact them before the agent sees them.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    unlabelled_tool: tuple[str, ...] = ("untrusted", "egress")
    unlabelled_resource: tuple[str, ...] = ("untrusted",)
    unlabelled_prompt: tuple[str, ...] = ("egress",)  # its arguments go to the upstream
    trifecta: FlowMode = "deny"
    flow_window: Duration = timedelta(hours=24)
    args_max_bytes: int = Field(default=1_048_576, ge=1024, le=16_777_216)
    args_max_depth: int = Field(default=16, ge=1, le=64)
    args_max_values: int = Field(default=10_000, ge=1, le=1_000_000)
    approval_ttl: Duration = timedelta(minutes=15)
    approval_wait: Wait = timedelta(seconds=0)
    approval_webhook: str | None = None
    scan_results: bool = True

    @model_validator(mode="after")
    def _check(self) -> GuardSettings:
        for name in ("unlabelled_tool", "unlabelled_resource", "unlabelled_prompt"):
            for label in getattr(self, name):
                if label not in LABELS:
                    raise ValueError(f"{name}: {label!r} is not a label ({', '.join(LABELS)})")
        hook = self.approval_webhook
        if hook is not None and (
            not hook.startswith(("https://", "http://")) or any(c.isspace() for c in hook)
        ):
            raise ValueError("approval_webhook must be an http(s) URL")
        return self


class EgressSettings(BaseModel):
    """``[egress]``: the identity-aware egress proxy for agents' HTTP API calls (issue 18;
    see docs/egress.md).

    - ``port``: where ``tether up`` serves the forward proxy (``HTTPS_PROXY``; 0: not
      served; ``tether proxy`` serves it alone); ``host`` its address (``tether up``'s
      ``--host`` when unset).
    - ``max_request_bytes`` / ``max_response_bytes``: larger bodies are refused (413 / 502).
    - ``connect_timeout`` / ``timeout``: reaching the destination, and its whole answer.
    - ``max_redirects``: redirects followed *within* the destination, each decided again.
    - ``unlabelled``: the labels a destination counts as while nobody has labelled it
      (safe by default: what it answers is untrusted, what is sent to it leaves).
    - ``context_headers``: the request headers rules may read as ``context.http.headers``
      (lower case); ``body_max_bytes``: a JSON body larger than this is not mapped into
      ``context.http.body`` (a rule that reads it then denies, saying why).
    - ``ca_file``: extra CA certificates (PEM) Tether trusts when it verifies an
      ``internal`` destination's TLS certificate (the system's are always trusted).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    port: int = Field(default=8701, ge=0, le=65535)
    host: str | None = None
    max_request_bytes: int = Field(default=1_048_576, ge=1024, le=1_073_741_824)
    max_response_bytes: int = Field(default=10_485_760, ge=1024, le=1_073_741_824)
    connect_timeout: Duration = timedelta(seconds=5)
    timeout: Duration = timedelta(seconds=30)
    max_redirects: int = Field(default=5, ge=0, le=20)
    unlabelled: tuple[str, ...] = ("untrusted", "egress")
    context_headers: tuple[str, ...] = ("content-type", "accept", "user-agent")
    body_max_bytes: int = Field(default=65_536, ge=0, le=16_777_216)
    ca_file: Path | None = None

    @model_validator(mode="after")
    def _check(self) -> EgressSettings:
        for label in self.unlabelled:
            if label not in LABELS:
                raise ValueError(f"unlabelled: {label!r} is not a label ({', '.join(LABELS)})")
        for header in self.context_headers:
            if not header or header != header.lower() or not header.replace("-", "").isalnum():
                raise ValueError(f"context_headers: {header!r} is not a lower-case header name")
        if self.connect_timeout.total_seconds() <= 0 or self.timeout.total_seconds() <= 0:
            raise ValueError("connect_timeout and timeout must be positive")
        return self


class Settings(BaseModel):
    """Everything the library needs to know, already parsed and checked."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    home: Path = DEFAULT_HOME
    db_url: str | None = None
    trust_domain: str = "tether.local"
    agent_lifetime_default: Duration = timedelta(days=90)
    agent_lifetime_max: Duration = timedelta(days=365)
    unowned_grace: Duration = timedelta(days=7)
    sweep_interval: Duration = timedelta(seconds=1)
    grant_lifetime_default: Duration = timedelta(days=30)
    grant_lifetime_max: Duration = timedelta(days=365)
    review_window: Duration = timedelta(days=30)
    max_chain_depth: int = Field(default=4, ge=1, le=16)
    decision_staleness_ms: int = Field(default=1000, ge=0, le=60_000)
    decision_cache_size: int = Field(default=100_000, ge=0)
    # the most tools (or resources, or prompts) one upstream listing may hold; a larger
    # listing is refused whole (nothing of it is pinned or shown)
    gateway_max_items: int = Field(default=1_000, ge=1, le=100_000)
    # how /mcp/NAME answers: "lean" parses each frame once and answers the methods that
    # matter itself (the rest goes to the MCP SDK's server); "sdk" sends everything there
    gateway_path: Literal["lean", "sdk"] = "lean"
    issuer: str = "http://127.0.0.1:8700"
    dev_idp: bool = False
    token_ttl_default: Duration = timedelta(minutes=5)
    token_ttl_max: Duration = timedelta(minutes=15)
    token_leeway: Duration = timedelta(seconds=30)
    assertion_ttl_max: Duration = timedelta(minutes=5)
    # Resource servers (APIs) Tether issues tokens for, besides itself, its gateway
    # servers and (for a hand-off) agents; any other audience is invalid_target.
    resource_servers: tuple[str, ...] = ()
    admin_groups: tuple[str, ...] = ()
    max_request_bytes: int = Field(default=1_048_576, ge=1024)  # every request body
    refusals_per_second: float = Field(default=20.0, ge=0)  # recorded refusals, per caller
    refusals_burst: int = Field(default=200, ge=1)
    idp: tuple[IdpConfig, ...] = ()
    audit: AuditSettings = AuditSettings()
    vault: VaultSettings = VaultSettings()
    detect: DetectSettings = DetectSettings()
    guard: GuardSettings = GuardSettings()
    egress: EgressSettings = EgressSettings()

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if _TRUST_DOMAIN.fullmatch(self.trust_domain) is None:
            raise ValueError(f"invalid trust_domain {self.trust_domain!r}")
        if self.agent_lifetime_default > self.agent_lifetime_max:
            raise ValueError("agent_lifetime_default is longer than agent_lifetime_max")
        if self.token_ttl_default > self.token_ttl_max:
            raise ValueError("token_ttl_default is longer than token_ttl_max")
        if not self.issuer.startswith(("https://", "http://")) or self.issuer.endswith("/"):
            raise ValueError("issuer must be an http(s) URL without a trailing slash")
        if self.grant_lifetime_default > self.grant_lifetime_max:
            raise ValueError("grant_lifetime_default is longer than grant_lifetime_max")
        for server in self.resource_servers:
            if (
                not server.startswith(("https://", "http://"))
                or len(server) > 512
                or any(c.isspace() for c in server)
            ):
                raise ValueError(f"resource_servers: {server!r} is not an http(s) URL")
        return self

    @property
    def database_url(self) -> str:
        """The store's SQLAlchemy URL: ``db_url`` or SQLite in ``home``."""
        return self.db_url or f"sqlite:///{(self.home / 'tether.db').resolve()}"

    @property
    def keys_dir(self) -> Path:
        return self.home / "keys"

    @property
    def admin_token_file(self) -> Path:
        return self.home / "admin.token"

    @classmethod
    def load(cls, home: Path, **overrides: Any) -> Settings:
        """Read ``home/tether.toml`` (if present) and apply ``overrides`` on top."""
        values: dict[str, Any] = {}
        path = home / CONFIG_FILE
        if path.exists():
            try:
                values = tomllib.loads(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
                raise InvalidRequest(f"cannot read {path}: {exc}") from exc
        values.update({k: v for k, v in overrides.items() if v is not None})
        values["home"] = home
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'config'}: {err['msg']}"
                for err in exc.errors()
            )
            raise InvalidRequest(f"invalid configuration in {path}: {problems}") from exc

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """``TETHER_HOME`` and ``TETHER_DB`` from the environment (faces only)."""
        env = os.environ if environ is None else environ
        home = Path(env.get("TETHER_HOME") or DEFAULT_HOME)
        return cls.load(home, db_url=env.get("TETHER_DB") or None)
