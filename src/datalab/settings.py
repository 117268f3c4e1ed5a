"""The one typed settings object, read from DATALAB_* environment variables."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PLACEHOLDER_SECRETS = frozenset({"", "changethis", "changeme", "secret", "dev"})
MIN_METRICS_TOKEN_LENGTH = 16
# splink's own default sample for the u probabilities: precise enough for the quality tests' F1.
DEFAULT_EMATCH_TRAINING_PAIRS = 1_000_000


class Settings(BaseSettings):
    """Every setting of the server; each field is one DATALAB_<NAME> variable, documented in README."""

    model_config = SettingsConfigDict(env_prefix="DATALAB_", extra="ignore", frozen=True)

    home: Path = Field(default=Path("./var"), description="Data directory: database, objects, temp files.")
    database_url: str = Field(
        default="",
        description="SQLAlchemy URL; empty means SQLite at <home>/datalab.db. "
        "PostgreSQL: postgresql+psycopg://user@host/db.",
    )
    dev_mode: bool = Field(
        default=False, description="Allows placeholder secrets; for local sandboxes and the demo only."
    )
    secret_key: str = Field(
        default="changethis",
        description="Signs session tokens and derives the object store's signing credentials. "
        "Must be changed outside dev mode.",
    )
    session_token_ttl_seconds: int = Field(default=1200, ge=30, description="Lifetime of a session token.")
    datacenter_session_hours: float = Field(
        default=12,
        gt=0,
        description="How long a Data Center sign-in lasts before the browser must sign in again.",
    )
    require_api_key_on_login: bool = Field(
        default=True, description="Refuse /v1/login without a valid x-api-key header."
    )
    login_max_failures: int = Field(
        default=5, ge=1, description="Failed logins for one userName before it is locked out for a while."
    )
    login_max_failures_per_address: int = Field(
        default=20, ge=1, description="Failed logins from one client address before it is locked out."
    )
    login_failure_window_seconds: int = Field(
        default=900, ge=1, description="Window in which failed logins are counted."
    )
    login_lockout_seconds: int = Field(
        default=300, ge=1, description="How long a locked-out userName or address gets 429."
    )
    public_url: str = Field(
        default="",
        description="Base URL clients use to reach this server (e.g. https://datalab.example.edu); "
        "empty means the URL of each request. Signed URLs point here.",
    )
    forwarded_allow_ips: str = Field(
        default="",
        description="Comma-separated proxy addresses trusted for X-Forwarded-For/-Proto; empty trusts none.",
    )
    download_url_ttl_seconds: int = Field(
        default=60, ge=1, le=604800, description="Lifetime of a one-time export download URL."
    )
    storage_backend: Literal["local", "s3"] = Field(
        default="local",
        description="Object store: 'local' (files under <home>/objects, served by this app) or 's3'.",
    )
    s3_endpoint_url: str = Field(
        default="",
        description="S3-compatible endpoint (MinIO, moto, ...); empty means AWS. Credentials come from "
        "the standard AWS chain (AWS_ACCESS_KEY_ID, profiles, instance roles).",
    )
    s3_redirect_ttl_seconds: int = Field(
        default=30,
        ge=1,
        le=604800,
        description="On S3: lifetime of the presigned GET a download ticket redirects to.",
    )
    upload_sweep_interval_seconds: int = Field(
        default=15,
        ge=1,
        description="How often files past their retention (exports, uploads, canceled uploads) are removed "
        "and, on S3, how often the bucket is checked for uploads that arrived.",
    )
    pipeline_queue: Literal["embedded", "procrastinate"] = Field(
        default="embedded",
        description="Who runs pipeline stages: `embedded` worker threads of `datalab serve`, or "
        "`procrastinate` (PostgreSQL only): separate `datalab worker` processes.",
    )
    pipeline_max_rejected_percent: float = Field(
        default=10.0,
        ge=0,
        le=100,
        description="A file whose rejected rows are more than this share of its rows ends in `failure`.",
    )
    ematch_matcher: Literal["probabilistic", "rules"] = Field(
        default="probabilistic",
        description="How eMatch rows are matched to students: `probabilistic` (splink's Fellegi-Sunter model "
        "plus deterministic guards) or `rules` (exact email, or exact name with birth date or ZIP).",
    )
    ematch_threshold: float = Field(
        default=0.9,
        gt=0,
        lt=1,
        description="Match probability an eMatch row needs to match a student (probabilistic matcher).",
    )
    ematch_training_pairs: int = Field(
        default=DEFAULT_EMATCH_TRAINING_PAIRS,
        ge=1,
        description="Random pairs of records splink compares to estimate the u probabilities when the "
        "matching model is trained (student load and train): more pairs give more precise probabilities "
        "and a longer training (a few seconds a million on one core).",
    )
    export_retention_days: float = Field(
        default=180.0,
        ge=0,
        description="Days after publication an export is kept: then its file is deleted and it is no longer "
        "listed to its organization (operators still see it, as expired). 0 keeps exports forever.",
    )
    upload_retention_days: float = Field(
        default=90.0,
        ge=0,
        description="Days after an upload ended (`done` or `failure`) its file and row report are kept. "
        "0 keeps them forever.",
    )
    canceled_retention_hours: float = Field(
        default=24.0,
        ge=0,
        description="How long the file of a canceled upload is kept before it is removed.",
    )
    pipeline_workers: int = Field(
        default=2,
        ge=0,
        description="Pipeline worker threads inside `datalab serve` (0: this process runs none), or "
        "concurrent jobs of each `datalab worker`.",
    )
    pipeline_poll_seconds: float = Field(
        default=1.0,
        gt=0,
        description="How long an idle pipeline worker waits before looking for work again (procrastinate "
        "workers are also woken by PostgreSQL notifications).",
    )
    worker_metrics_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="Port on which each `datalab worker` answers Prometheus scrapes of its own metrics "
        "(pipeline stage durations and failures, webhook attempts); 0 serves none.",
    )
    worker_metrics_host: str = Field(
        default="127.0.0.1",
        description="Address the worker's metrics port listens on (loopback unless a scraper elsewhere "
        "must reach it).",
    )
    pipeline_lease_seconds: float = Field(
        default=60,
        ge=1,
        description="A job whose worker stops renewing its lease (embedded) or its heartbeat (procrastinate) "
        "for this long is run again by another worker.",
    )
    pipeline_max_attempts: int = Field(
        default=3, ge=1, description="Tries of a pipeline stage before its upload ends in failure."
    )
    webhook_timeout_seconds: float = Field(
        default=5.0,
        gt=0,
        le=60,
        description="Longest a webhook receiver may take to answer a delivery before the attempt fails.",
    )
    webhook_retry_seconds: list[float] = Field(
        default=[10, 30, 120, 600, 3600],
        min_length=0,
        max_length=20,
        description="Waits before each retry of a webhook delivery that did not get a 2xx answer, as a "
        "JSON list (e.g. `[10, 30, 120, 600, 3600]`); once they are used up the delivery is `failed`.",
    )
    webhook_poll_seconds: float = Field(
        default=1.0,
        gt=0,
        description="How long the webhook sender of `datalab serve` waits, when no delivery is due, before "
        "looking again.",
    )
    webhook_allow_private_targets: bool = Field(
        default=False,
        description="Let webhooks deliver to loopback, private, link-local and other non-public addresses "
        "(always allowed in dev mode). Checked when a webhook is saved and at every delivery.",
    )
    email_smtp_host: str = Field(
        default="",
        description="SMTP server the export digests are sent through; empty: no e-mail is sent.",
    )
    email_smtp_port: int = Field(default=587, ge=1, le=65535, description="Port of the SMTP server.")
    email_smtp_security: Literal["starttls", "ssl", "none"] = Field(
        default="starttls",
        description="How the SMTP connection is protected: `starttls` (upgrade a plain connection, "
        "usually port 587), `ssl` (TLS from the start, usually port 465) or `none`.",
    )
    email_smtp_user: str = Field(default="", description="SMTP user name; empty: no authentication.")
    email_smtp_password: SecretStr = Field(
        default=SecretStr(""), description="SMTP password (never logged nor shown)."
    )
    email_smtp_timeout_seconds: float = Field(
        default=30.0, gt=0, le=300, description="Longest the SMTP server may take to answer one command."
    )
    email_from: str = Field(
        default="", description="From address of the digests, e.g. `Data Lab <datalab@example.edu>`."
    )
    email_digest_minutes: float = Field(
        default=60,
        gt=0,
        description="Digest period: new exports are mailed to each user of their organization at most "
        "once per period, in one message.",
    )
    max_concurrent_requests: int = Field(
        default=8,
        ge=1,
        le=32,
        description="Requests of one server process doing database work at once; the others queue.",
    )
    request_queue_seconds: float = Field(
        default=3.0,
        gt=0,
        le=60,
        description="Longest a request waits in the queue for a turn; one that would wait longer gets "
        "503 with Retry-After at once.",
    )
    request_queue_max: int = Field(
        default=1000, ge=1, description="Most requests of one server process waiting in the queue."
    )
    request_read_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        description="Longest a client may take to send a request's headers, or between two parts of its "
        "body, before the connection is closed (headers) or the request gets 408 (body).",
    )
    max_header_bytes: int = Field(
        default=16 * 1024,
        ge=1024,
        le=1024 * 1024,
        description="Largest request line plus headers a request may send (431 beyond).",
    )
    max_connections: int = Field(
        default=1024,
        ge=1,
        description="Open connections (or requests in progress) of one server process; a request past "
        "it gets 503 and its connection is closed.",
    )
    metrics_token: str = Field(
        default="",
        description="Bearer token `/metrics` requires (16+ characters); empty: `/metrics` answers "
        "loopback clients only.",
    )
    log_format: Literal["json", "text"] = Field(
        default="json",
        description="Server log lines: `json` (one object per line, with the request id) or `text`.",
    )
    readiness_timeout_seconds: float = Field(
        default=5.0,
        gt=0,
        le=60,
        description="How long `/readyz` waits for the database and for the object store before it "
        "reports the one that did not answer.",
    )
    storage_region: str = Field(default="us-east-1", description="Region named in signed URLs.")
    exports_bucket: str = Field(default="datalab-exports", description="Bucket holding export files.")
    uploads_bucket: str = Field(default="datalab-uploads", description="Bucket receiving uploaded files.")
    upload_form_ttl_seconds: int = Field(
        default=600, ge=1, le=604800, description="Lifetime of the presigned POST form of an upload."
    )
    max_upload_bytes: int = Field(
        default=5 * 1024**3, ge=1, description="Largest file an upload form accepts (content-length-range)."
    )
    admin_file_max_bytes: int = Field(
        default=64 * 1024**2,
        ge=1,
        description="Largest file an operator sends in a /v1/admin request body (student CSV, small export).",
    )

    @field_validator("webhook_retry_seconds", mode="before")
    @classmethod
    def _retry_seconds_from_json(cls, value: object) -> object:
        # The environment's JSON text is decoded by pydantic-settings; the same text given directly
        # (Settings.model_validate of DATALAB_* values) is decoded here.
        if isinstance(value, str):
            try:
                return json.loads(value)
            except json.JSONDecodeError:
                raise ValueError("must be a JSON list of seconds, e.g. [10, 30, 120, 600, 3600]") from None
        return value

    @model_validator(mode="after")
    def _refuse_placeholder_secrets(self) -> Settings:
        if not self.dev_mode and self.secret_key.strip().lower() in PLACEHOLDER_SECRETS:
            raise ValueError(
                "DATALAB_SECRET_KEY is a placeholder; set a long random value "
                "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(48))'`) "
                "or set DATALAB_DEV_MODE=1 for a local sandbox"
            )
        if not self.dev_mode and len(self.secret_key) < 32:
            raise ValueError("DATALAB_SECRET_KEY must be at least 32 characters outside dev mode")
        return self

    @model_validator(mode="after")
    def _refuse_short_metrics_token(self) -> Settings:
        if self.metrics_token and len(self.metrics_token) < MIN_METRICS_TOKEN_LENGTH:
            raise ValueError(
                f"DATALAB_METRICS_TOKEN must be at least {MIN_METRICS_TOKEN_LENGTH} characters "
                "(or empty: /metrics then answers loopback clients only)"
            )
        return self

    @model_validator(mode="after")
    def _worker_queue_needs_postgresql(self) -> Settings:
        if self.pipeline_queue == "procrastinate" and not self.resolved_database_url.startswith("postgresql"):
            raise ValueError(
                "DATALAB_PIPELINE_QUEUE=procrastinate needs PostgreSQL: set DATALAB_DATABASE_URL to a "
                "postgresql+psycopg:// URL, or use the embedded queue"
            )
        return self

    @model_validator(mode="after")
    def _email_needs_a_sender_and_links(self) -> Settings:
        if self.email_smtp_host and not (self.email_from and self.public_url):
            raise ValueError(
                "DATALAB_EMAIL_SMTP_HOST needs DATALAB_EMAIL_FROM (the digests' From address) and "
                "DATALAB_PUBLIC_URL (the digests link to Data Center)"
            )
        return self

    @property
    def email_enabled(self) -> bool:
        """Whether export digests are mailed (an SMTP host is set)."""
        return bool(self.email_smtp_host)

    @property
    def webhook_private_targets_allowed(self) -> bool:
        """Whether webhooks may deliver to non-public addresses: dev mode, or the setting says so."""
        return self.dev_mode or self.webhook_allow_private_targets

    @property
    def encryption_key(self) -> bytes:
        """The Fernet key secrets stored in the database (webhook signing secrets) are encrypted with,
        derived from the secret key so every process of one deployment agrees."""
        return base64.urlsafe_b64encode(self._derive("stored-secret-encryption"))

    @property
    def unsubscribe_key(self) -> bytes:
        """The key the unsubscribe links of e-mail digests are signed with, derived from the secret key."""
        return self._derive("digest-unsubscribe")

    @property
    def temp_dir(self) -> Path:
        """Scratch space for files being assembled or read (downloads, archives, pipeline work)."""
        return self.home / "tmp"

    @property
    def resolved_database_url(self) -> str:
        """The database URL, defaulting to SQLite inside the data directory."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.home / 'datalab.db').resolve()}"

    def base_url(self, request_base_url: str) -> str:
        """The base URL clients reach this server at: public_url when set, else the one a request came to."""
        return (self.public_url or request_base_url).rstrip("/")

    @property
    def storage_access_key_id(self) -> str:
        """Access key id of the embedded store, derived so every process of one deployment agrees."""
        digest = self._derive("storage-access-key-id").hex().upper()
        return "AKIA" + digest[:16]

    @property
    def storage_secret_access_key(self) -> str:
        """Secret of the embedded store, derived from the secret key and never configured separately."""
        return self._derive("storage-secret-access-key").hex()

    def storage_secret_for(self, access_key_id: str) -> str | None:
        """The embedded store's secret for its access key id (compared in constant time), else None."""
        if hmac.compare_digest(access_key_id.encode(), self.storage_access_key_id.encode()):
            return self.storage_secret_access_key
        return None

    def _derive(self, purpose: str) -> bytes:
        return hmac.new(self.secret_key.encode(), purpose.encode(), hashlib.sha256).digest()


def load_settings() -> Settings:
    """Read the settings from the environment."""
    return Settings()
