"""Settings: the single source of truth for environment variables and CLI flags.

Every field reads ``CERULEAN_<NAME>`` from the environment; `cerulean serve` derives one flag per
field marked ``cli=True`` in its ``json_schema_extra`` (see :func:`cli_fields`).
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings", "cli_fields"]

_CLI: dict[str, Any] = {"cli": True}
MIN_KEY_LENGTH = 32  # Azure's keys are 32 characters


class Settings(BaseSettings):
    """Cerulean's configuration (env prefix ``CERULEAN_``)."""

    # hide_input_in_errors: a refused value (a weak key) never reaches a log or a traceback.
    model_config = SettingsConfigDict(
        env_prefix="CERULEAN_",
        extra="ignore",
        frozen=True,
        hide_input_in_errors=True,
        populate_by_name=True,  # the OTEL_* fields take their names too (tests, the CLI)
    )

    host: str = Field(
        "127.0.0.1",
        description="Interface to bind; 127.0.0.1 keeps the server local (0.0.0.0 exposes it).",
        json_schema_extra=_CLI,
    )
    port: int = Field(
        8000, ge=0, le=65535, description="TCP port to listen on.", json_schema_extra=_CLI
    )
    home: Path = Field(
        Path("~/.cerulean"),
        description="Data directory: database, assembled model files, generated keys.",
        json_schema_extra=_CLI,
    )
    model: Path | None = Field(
        None,
        description="A GGUF file to serve behind the default deployments instead of the embedded "
        "Gemma 3 270M.",
        json_schema_extra=_CLI,
    )
    embedded: bool = Field(
        True,
        description="Load the embedded model (or --model) behind gpt-35-turbo and gpt-4; "
        "--no-embedded runs a pure gateway that serves only upstream-backed deployments "
        "(and loads no embedding model either).",
        json_schema_extra=_CLI,
    )
    embeddings: bool = Field(
        True,
        description="Serve the embedding model (all-MiniLM-L6-v2) behind the deployment "
        "text-embedding-ada-002.",
        json_schema_extra=_CLI,
    )
    embedding_model: Path | None = Field(
        None,
        description="A GGUF of a BERT-class sentence-embedding model (mean or CLS pooling) to "
        "serve instead of the packaged all-MiniLM-L6-v2.",
        json_schema_extra=_CLI,
    )
    n_ctx: int = Field(
        4096,
        ge=256,
        le=1 << 20,
        description="Context window (tokens) of each request slot; the KV cache holds "
        "--parallel of them.",
        json_schema_extra=_CLI,
    )
    n_threads: int | None = Field(
        None,
        ge=1,
        le=512,
        description="CPU threads for llama.cpp (default: all cores).",
        json_schema_extra=_CLI,
    )
    n_gpu_layers: int | None = Field(
        None,
        ge=-1,
        description="Layers to offload to a GPU (-1: all). Default: all when llama.cpp was built "
        "with a GPU backend and finds a device, else 0.",
        json_schema_extra=_CLI,
    )
    parallel: int = Field(
        8,
        ge=1,
        le=128,
        description="Requests one model generates at once (slots); more wait in line.",
        json_schema_extra=_CLI,
    )
    n_batch: int = Field(
        1024,
        ge=32,
        le=8192,
        description="Most tokens one llama.cpp decode step carries (long prompts are chunked).",
        json_schema_extra=_CLI,
    )
    fair_share: bool = Field(
        True,
        description="Fair sharing of the slots: while other requests run or wait, a request's "
        "choices (n) start in waves of at most slots / (requests + 1).",
        json_schema_extra=_CLI,
    )
    max_answer_tokens: int = Field(
        65536,
        ge=1,
        description="Most answer tokens (n x max_tokens, or n x the default reservation) one "
        "request may ask of a deployment without a real capacity (the built-in ones); more is "
        "a 400.",
    )
    queue_size: int = Field(
        64,
        ge=0,
        description="Requests that may wait for a slot; beyond it the answer is 429 with "
        "retry-after.",
        json_schema_extra=_CLI,
    )
    queue_timeout: float = Field(
        60.0,
        gt=0,
        description="Seconds a request may wait for a slot before a 503.",
        json_schema_extra=_CLI,
    )
    default_max_tokens: int | None = Field(
        None,
        ge=1,
        description="Generation cap when a request sets no max_tokens (default: 256 for the "
        "embedded base model, the rest of the context for others).",
        json_schema_extra=_CLI,
    )
    header_timeout: float = Field(
        10.0,
        gt=0,
        le=3600,
        description="Seconds a connection may take to send a request's headers (from its "
        "opening, or from the request's first byte when kept alive); then 408 and closed.",
        json_schema_extra=_CLI,
    )
    keep_alive_timeout: float = Field(
        5.0,
        ge=1,
        le=3600,
        description="Seconds an idle keep-alive connection stays open between requests.",
        json_schema_extra=_CLI,
    )
    key1: SecretStr | None = Field(
        None, description="Account key 1 (env only, e.g. from a secret store)."
    )
    key2: SecretStr | None = Field(None, description="Account key 2 (env only).")
    allow_weak_keys: bool = Field(
        False,
        description="Accept pinned keys (CERULEAN_KEY1/KEY2) shorter than Azure's 32 characters.",
    )
    key_secret: SecretStr | None = Field(
        None,
        description="Server secret keying the stored key digests (env only; default: "
        "<home>/key.secret, generated 0600). Processes sharing a database need the same.",
    )
    write_keys_file: bool = Field(
        True,
        description="Write generated keys once to <home>/keys.json (mode 0600) so later runs can "
        "print them again, as the portal does.",
        json_schema_extra=_CLI,
    )
    metrics_token: SecretStr | None = Field(
        None,
        description="Bearer token that opens GET /metrics only (a Prometheus scrape), besides "
        "the account keys (env only).",
    )
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL of the store (default: SQLite in the data directory); "
        "postgresql:// URLs use psycopg 3.",
    )
    redis_url: str | None = Field(
        None,
        description="Redis URL of a rate-limit budget shared by several Cerulean processes "
        "(default: each process keeps its own).",
    )
    redis_outage: str = Field(
        "closed",
        pattern="^(closed|open)$",
        description="While the rate limiter's Redis is unreachable: closed refuses inference "
        "requests with a 503; open limits them in each process alone (each replica may then "
        "admit up to the whole budget).",
    )
    redis_timeout: float = Field(
        2.0, gt=0, le=60, description="Seconds to connect to Redis, and to wait for one reply."
    )
    redis_prefix: str = Field(
        "cerulean:ratelimit:", description="Prefix of the rate limiter's Redis keys."
    )
    admin_token: SecretStr | None = Field(
        None,
        description="Bearer token of the management (ARM) API; unset, that API is disabled "
        "(env only).",
    )
    studio: bool = Field(
        True,
        description="Serve Cerulean Studio, the web portal, at /studio (sign in with the admin "
        "token, or the generated <home>/studio.token when CERULEAN_ADMIN_TOKEN is unset).",
        json_schema_extra=_CLI,
    )
    studio_session_seconds: float = Field(
        8 * 3600.0,
        gt=0,
        le=30 * 24 * 3600,
        description="Seconds a Studio sign-in lasts; past it the session is refused and the "
        "browser signs in again.",
    )
    account_name: str = Field(
        "cerulean",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9-]{1,63}$",
        description="The account (resource) name in management API paths.",
    )
    reconcile_interval: float = Field(
        2.0,
        gt=0,
        le=3600,
        description="Seconds between the server's checks of the store for deployments created "
        "or deleted by other processes (loading and unloading models).",
    )
    content_filter_cache_seconds: float = Field(
        5.0,
        ge=0,
        le=3600,
        description="Seconds the server trusts its copy of a content-filter policy or blocklist "
        "before re-reading the store (changes made through this server apply at once).",
    )
    key_cache_seconds: float = Field(
        1.0,
        ge=0,
        le=3600,
        description="Seconds the server trusts its copy of the key digests before re-reading "
        "the store (0: on every request); bounds how long a regenerated key's old value works.",
    )
    upstream_connect_timeout: float = Field(
        5.0, gt=0, le=300, description="Seconds to connect to an upstream before trying another."
    )
    upstream_first_byte_timeout: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="Seconds a request may wait for its upstream's first chunk, retries "
        "included; past it the answer is a 504.",
    )
    upstream_read_timeout: float = Field(
        60.0,
        gt=0,
        le=3600,
        description="Seconds an upstream may stay silent in the middle of an answer before the "
        "answer ends with a 504 error event.",
    )
    upstream_retries: int = Field(
        2, ge=0, le=10, description="Other upstreams a request tries before its first byte."
    )
    upstream_cooldown: float = Field(
        5.0,
        gt=0,
        le=600,
        description="Seconds a failed upstream is out of routing (doubling with each "
        "consecutive failure, up to a minute; an upstream's own retry-after wins).",
    )
    upstream_health_interval: float = Field(
        5.0, gt=0, le=3600, description="Seconds between health checks of each upstream in use."
    )
    route_policy: str = Field(
        "affinity",
        pattern="^(affinity|round-robin)$",
        description="How a deployment's upstreams share its requests: affinity (prefix "
        "affinity, sticky until saturated) or round-robin (a baseline for comparison).",
    )
    route_spill_abs: int = Field(
        4,
        ge=0,
        description="Routing: a request leaves its preferred upstream (prefix affinity) only "
        "when it has more than this many requests beyond the least busy...",
    )
    route_spill_ratio: float = Field(
        1.5, ge=1, description="...and more than this many times the least busy's."
    )
    routing_redis_prefix: str = Field(
        "cerulean:routing:", description="Prefix of the routing state's Redis keys."
    )
    files_dir: Path | None = Field(
        None,
        description="Where uploaded and batch-produced files are kept (default: <home>/files). "
        "Servers that share a database must share this directory too.",
        json_schema_extra=_CLI,
    )
    max_files: int = Field(
        500,
        ge=1,
        description="Files the resource may hold without an expiry (Azure: 500); files uploaded "
        "with expires_after count against max_files_with_expiry instead.",
    )
    max_files_with_expiry: int = Field(
        10_000, ge=1, description="Files with an expiry the resource may hold (Azure: 10,000)."
    )
    batch_file_max_bytes: int = Field(
        200 * 1024 * 1024,
        ge=1,
        description="Largest file of purpose batch (Azure: 200 MB).",
    )
    file_max_bytes: int = Field(
        512 * 1024 * 1024,
        ge=1,
        description="Largest file of the other purposes (fine-tune, assistants; Azure: 512 MB).",
    )
    batch_max_lines: int = Field(
        100_000, ge=1, description="Most requests (lines) in one batch input file (Azure: 100,000)."
    )
    batch_token_limit: int = Field(
        200_000_000,
        ge=1,
        description="Enqueued-token quota of a deployment's batch jobs (prompts estimated at four "
        "characters a token, plus max_tokens); a GlobalBatch or DataZoneBatch deployment uses "
        "its capacity (thousands of tokens) instead.",
    )
    batch_runner: bool = Field(
        True,
        description="Run batch jobs in this server (several servers on one PostgreSQL share "
        "them through leases; with SQLite, one server).",
        json_schema_extra=_CLI,
    )
    batch_lease_seconds: float = Field(
        30.0,
        ge=0.5,
        le=3600,
        description="How long a runner's claim on a batch line (or on a batch it validates or "
        "finalizes) lasts without renewal; a runner that died is replaced after it.",
    )
    batch_poll_interval: float = Field(
        1.0, gt=0, le=60, description="Seconds between a batch runner's looks for new work."
    )
    batch_width: int | None = Field(
        None,
        ge=1,
        le=1024,
        description="Batch lines one runner keeps in flight (default: the largest engine's "
        "slots and a quarter more, so that the engine stays at full width).",
    )
    response_retention_days: float = Field(
        30,
        gt=0,
        description="Days a stored Responses API response (and its input items) is kept before "
        "the purge deletes it (Azure: 30).",
        json_schema_extra=_CLI,
    )
    response_purge_interval: float = Field(
        3600, gt=0, description="Seconds between purges of expired stored responses."
    )
    response_heartbeat: float = Field(
        10,
        gt=0,
        description="Seconds between the heartbeats of running background responses; one "
        "silent for three heartbeats (its server died) is marked failed.",
    )
    entra_issuer: str | None = Field(
        None,
        description="Microsoft Entra ID: the accepted 'iss' of bearer tokens (several, "
        "comma-separated), e.g. https://sts.windows.net/<tenant id>/; needs entra_jwks_url.",
    )
    entra_jwks_url: str | None = Field(
        None,
        description="Microsoft Entra ID: the issuer's JWKS (signing keys) URL, https (http only "
        "on a loopback address), e.g. https://login.microsoftonline.com/<tenant "
        "id>/discovery/v2.0/keys.",
    )
    entra_audience: str = Field(
        "https://cognitiveservices.azure.com",
        description="The 'aud' a data-plane bearer token must carry (with or without a "
        "trailing /).",
    )
    entra_management_audience: str = Field(
        "https://management.azure.com",
        description="The 'aud' a management (ARM) API bearer token must carry (with or without "
        "a trailing /; https://management.core.windows.net is accepted too).",
    )
    entra_clock_skew: float = Field(
        60.0,
        ge=0,
        le=600,
        description="Seconds of clock skew allowed on a token's exp and nbf.",
    )
    entra_jwks_cache_seconds: float = Field(
        3600.0,
        gt=0,
        le=86400,
        description="Seconds the issuer's keys are trusted before the JWKS is fetched again; "
        "when it cannot be, tokens are refused (fail closed).",
    )
    entra_jwks_refresh_interval: float = Field(
        30.0,
        ge=0,
        le=3600,
        description="Least seconds between two fetches of the JWKS (a token with an unknown "
        "'kid' fetches it again, at most this often).",
    )
    trust_local_issuer: bool = Field(
        False,
        description="Accept bearer tokens signed by this home's local issuer "
        "(cerulean tokens issue): Entra ID sign-in for development, offline.",
        json_schema_extra=_CLI,
    )
    region: str = Field("local", description="Value of the x-ms-region response header.")
    max_body_bytes: int = Field(
        8 * 1024 * 1024, ge=1024, description="Largest request body accepted (bytes)."
    )
    log_level: str = Field(
        "info",
        pattern="^(critical|error|warning|info|debug)$",
        description="Log level.",
        json_schema_extra=_CLI,
    )
    log_format: str = Field(
        "text",
        pattern="^(text|json)$",
        description="Log lines as text, or as one JSON object a line (the per-request line "
        "with its fields: docs/telemetry.md).",
        json_schema_extra=_CLI,
    )
    usage_accounting: bool = Field(
        True,
        description="Record every data-plane request's usage (deployment, caller, tokens, "
        "status, latency) per minute in the store (cerulean usage; docs/telemetry.md).",
        json_schema_extra=_CLI,
    )
    usage_retention_days: float = Field(
        90.0,
        gt=0,
        le=36500,
        description="Days the per-minute usage rows are kept; older ones are deleted hourly.",
        json_schema_extra=_CLI,
    )
    usage_flush_interval: float = Field(
        1.0,
        gt=0,
        le=60,
        description="Seconds between writes of the buffered usage to the store (what a kill -9 "
        "may lose).",
    )
    # OpenTelemetry: the standard OTEL_* variables (no CERULEAN_ prefix). Telemetry is on when an
    # OTLP endpoint is set; the SDK itself reads the others (headers, timeout, service name,
    # resource attributes, export interval, sampler): docs/telemetry.md.
    otel_endpoint: str | None = Field(
        None,
        validation_alias="OTEL_EXPORTER_OTLP_ENDPOINT",
        description="Base URL of an OTLP/HTTP collector (traces go to /v1/traces, metrics to "
        "/v1/metrics); unset with the two below, telemetry is off.",
    )
    otel_traces_endpoint: str | None = Field(
        None,
        validation_alias="OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        description="Full URL traces are posted to (overrides the base URL's).",
    )
    otel_metrics_endpoint: str | None = Field(
        None,
        validation_alias="OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
        description="Full URL metrics are posted to (overrides the base URL's).",
    )
    otel_traces_exporter: str = Field(
        "otlp",
        validation_alias="OTEL_TRACES_EXPORTER",
        description="otlp, or none for no traces.",
    )
    otel_metrics_exporter: str = Field(
        "otlp",
        validation_alias="OTEL_METRICS_EXPORTER",
        description="otlp, or none for no metrics.",
    )
    otel_sdk_disabled: bool = Field(
        False, validation_alias="OTEL_SDK_DISABLED", description="true turns telemetry off."
    )
    otel_capture_content: bool = Field(
        False,
        validation_alias="OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT",
        description="true records prompts and answers on the spans (gen_ai.input.messages, "
        "gen_ai.output.messages); off, they are never recorded.",
    )

    @model_validator(mode="after")
    def _strong_keys(self) -> Settings:
        for name in ("key1", "key2"):
            value: SecretStr | None = getattr(self, name)
            length = len(value.get_secret_value()) if value is not None else 0
            if 0 < length < MIN_KEY_LENGTH and not self.allow_weak_keys:
                raise ValueError(
                    f"CERULEAN_{name.upper()} has {length} characters; pinned keys need at least "
                    f"{MIN_KEY_LENGTH}, as Azure's. Use a random one (python -c 'import secrets; "
                    "print(secrets.token_hex(16))'), or set CERULEAN_ALLOW_WEAK_KEYS=true to "
                    "accept it anyway"
                )
        secret = self.key_secret.get_secret_value() if self.key_secret is not None else None
        if secret is not None and len(secret) < MIN_KEY_LENGTH:
            raise ValueError(
                f"CERULEAN_KEY_SECRET has {len(secret)} characters; give at least "
                f"{MIN_KEY_LENGTH} random ones (python -c 'import secrets; "
                "print(secrets.token_hex(32))')"
            )
        return self

    @model_validator(mode="after")
    def _entra(self) -> Settings:
        if (self.entra_issuer is None) != (self.entra_jwks_url is None):
            raise ValueError(
                "CERULEAN_ENTRA_ISSUER and CERULEAN_ENTRA_JWKS_URL go together: set both (the "
                "accepted 'iss' and where its signing keys are) or neither"
            )
        if self.entra_jwks_url is not None and not _safe_jwks_url(self.entra_jwks_url):
            raise ValueError(
                "CERULEAN_ENTRA_JWKS_URL must be an https:// URL (http:// only on a loopback "
                "address such as 127.0.0.1, for development)"
            )
        return self

    @property
    def entra_issuers(self) -> tuple[str, ...]:
        """The accepted 'iss' values of the configured issuer (empty: none configured)."""
        if self.entra_issuer is None:
            return ()
        return tuple(i.strip() for i in self.entra_issuer.split(",") if i.strip())

    @field_validator("home", mode="after")
    @classmethod
    def _expand_home(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @field_validator("model", "embedding_model", mode="after")
    @classmethod
    def _expand_model(cls, value: Path | None) -> Path | None:
        return None if value is None else value.expanduser().resolve()

    @property
    def threads(self) -> int:
        """Threads for llama.cpp: the setting, else every core this process may use."""
        if self.n_threads is not None:
            return self.n_threads
        return (
            len(os.sched_getaffinity(0))
            if hasattr(os, "sched_getaffinity")
            else os.cpu_count() or 1
        )

    @property
    def store_url(self) -> str:
        """The database URL, defaulting to SQLite inside the data directory."""
        return self.database_url or f"sqlite:///{self.sqlite_file}"

    @property
    def otel_traces_url(self) -> str | None:
        """Where spans are exported (OTLP/HTTP), or None: no traces."""
        return self._otel_url(self.otel_traces_exporter, self.otel_traces_endpoint, "traces")

    @property
    def otel_metrics_url(self) -> str | None:
        """Where metrics are exported (OTLP/HTTP), or None: no metrics."""
        return self._otel_url(self.otel_metrics_exporter, self.otel_metrics_endpoint, "metrics")

    def _otel_url(self, exporter: str, endpoint: str | None, signal: str) -> str | None:
        if self.otel_sdk_disabled or exporter.strip().lower() == "none":
            return None
        if endpoint:
            return endpoint
        if self.otel_endpoint:
            return f"{self.otel_endpoint.rstrip('/')}/v1/{signal}"
        return None

    @property
    def files_path(self) -> Path:
        """The directory holding file contents."""
        return self.files_dir.expanduser().resolve() if self.files_dir else self.home / "files"

    @property
    def upload_body_limit(self) -> int:
        """The body limit of a file upload: the largest file plus room for the form around it."""
        return max(self.batch_file_max_bytes, self.file_max_bytes) + 1024 * 1024

    @property
    def sqlite_file(self) -> Path:
        """The SQLite database a store uses when no ``database_url`` is set."""
        return self.home / "cerulean.db"


def _safe_jwks_url(url: str) -> bool:
    parsed = urlsplit(url)
    if parsed.scheme == "https" and parsed.hostname:
        return True
    if parsed.scheme != "http" or not parsed.hostname:
        return False
    if parsed.hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(parsed.hostname).is_loopback
    except ValueError:
        return False


def cli_fields() -> dict[str, Any]:
    """The settings fields that `cerulean serve` exposes as flags, by name."""
    return {
        name: field
        for name, field in Settings.model_fields.items()
        if isinstance(field.json_schema_extra, dict) and field.json_schema_extra.get("cli")
    }
