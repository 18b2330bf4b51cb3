"""Every knob of aicmo, read from the environment (prefix ``AICMO_``).

The defaults are the embedded ones: a SQLite file and kombu's filesystem transport under
``./var``, so a fresh clone runs the demo with no server. Production sets
``AICMO_DATABASE_URL=postgresql+psycopg://...`` and ``AICMO_BROKER_URL=redis://...``.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# A webhook source is the last part of its URL: the same rule as lead sources (aicmo.cam.leads).
WEBHOOK_SOURCE_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,63}$"


class WebhookSource(BaseModel):
    """One lead webhook source: its signing secret and the campaigns it may post into."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    secret: SecretStr
    campaigns: (
        Literal["*"] | Annotated[list[Annotated[int, Field(gt=0, lt=2**63)]], Field(min_length=1)]
    ) = "*"

    def allows(self, campaign_id: int) -> bool:
        return self.campaigns == "*" or campaign_id in self.campaigns


class Settings(BaseSettings):
    # hide_input_in_errors: a bad value must not echo a secret (hook URL, key) into a traceback.
    model_config = SettingsConfigDict(
        env_prefix="AICMO_", extra="ignore", hide_input_in_errors=True
    )

    # -- where things live ---------------------------------------------------------------
    database_url: str = Field(
        default="sqlite:///var/aicmo.db",
        description="SQLAlchemy URL; postgresql+psycopg://... in production.",
    )
    broker_url: str = Field(
        default="filesystem://",
        description="Celery broker; redis://host:6379/0 in production, or Redis Sentinel: "
        "sentinel://host1:26379;sentinel://host2:26379;sentinel://host3:26379 (a "
        "/db number on the first) with AICMO_BROKER_MASTER_NAME.",
    )
    broker_master_name: str | None = Field(
        default=None,
        min_length=1,
        description="Sentinel only: the name the sentinels monitor the Redis primary under "
        "(`sentinel monitor <name> ...`). Workers, producers, beat and the rate limits ask "
        "the sentinels for the current primary under this name and follow a failover.",
    )
    broker_sentinel_password: SecretStr | None = Field(
        default=None,
        description="Sentinel only: the sentinels' own password (requirepass of the sentinel "
        "processes); the Redis primary's password goes in the URL as usual.",
    )
    broker_dir: Path = Field(
        default=Path("var/broker"),
        description="Folder of the filesystem transport (embedded default only).",
    )
    broker_polling_interval: float = Field(
        default=0.02,
        gt=0,
        description="Seconds between polls of the filesystem transport (kombu's default 1 s "
        "gives about 2 tasks/s).",
    )
    broker_visibility_timeout_seconds: int = Field(
        default=3600,
        gt=0,
        description="Redis visibility timeout; must stay far above dispatch_horizon_seconds.",
    )
    sqlite_busy_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        description="SQLite only: how long a writer waits for another's write lock before "
        "'database is locked'. No transaction is held across I/O, so waits stay short.",
    )
    database_pooler: Literal["none", "transaction"] = Field(
        default="none",
        description="'transaction': AICMO_DATABASE_URL points at PgBouncer in transaction "
        "pooling, where consecutive transactions of one client may run on different server "
        "connections. psycopg then never prepares statements (PgBouncer before 1.21 cannot "
        "route them); the engine keeps no other session state (no SET, advisory locks, "
        "LISTEN, temp tables or server-side cursors).",
    )
    database_pre_ping: bool = Field(
        default=False,
        description="Test each pooled PostgreSQL connection before use (a round trip per "
        "transaction); without it the first use after a database restart fails once.",
    )
    task_events: bool = Field(
        default=True,
        description="Workers send task events (Flower needs them). They cost the worker's "
        "main process about three Redis publishes per task; Flower can also switch them on "
        "at run time.",
    )
    celery_app: str = Field(
        default="tasks",
        description="Module that builds the Celery app and installs the dispatcher.",
    )
    action_modules: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["aicmo.orchestration.adapters"],
        description="Modules imported to fill the action registry (comma list or JSON).",
    )

    # -- behaviour -----------------------------------------------------------------------
    proof_mode: bool = Field(
        default=True,
        description="Proof mode writes artifacts instead of calling real providers.",
    )
    artifact_dir: Path = Field(default=Path("var/artifacts"))
    max_payload_bytes: int = Field(default=256 * 1024, gt=0)
    max_payload_depth: int = Field(
        default=64,
        gt=0,
        le=500,
        description="Payloads nested deeper than this (objects and lists) are refused at "
        "enqueue, before any recursive walk could raise RecursionError.",
    )
    dispatch_horizon_seconds: float = Field(
        default=60.0,
        gt=0,
        description="Actions due later than this stay PENDING in the database; no countdown "
        "sent to the broker ever exceeds it.",
    )
    resend_grace_seconds: float = Field(
        default=60.0,
        gt=0,
        description="A READY/RETRY action whose message was due this long ago and is still "
        "unclaimed is re-sent by the sweeper when its queue is empty.",
    )
    resend_backlog_factor: float = Field(
        default=10.0,
        ge=1,
        description="Under a backlog (its queue not empty) a READY/RETRY action is re-sent "
        "once its message is this many resend grace periods late: the wait is bounded, and "
        "a row gets at most one extra message per such period.",
    )
    lease_margin_seconds: float = Field(
        default=30.0,
        gt=0,
        description="A claim's lease is the type's hard time limit plus this margin.",
    )
    batch_size: int = Field(
        default=100,
        ge=1,
        le=1000,
        description="Bulk publishes (enqueue_many, the sweeper's sends, beat fan-out) carry up "
        "to this many action ids of one type per Celery message, claimed in one statement; a "
        "type's own batch_size overrides it. 1 turns batching off everywhere.",
    )
    sweep_batch_size: int = Field(default=5000, gt=0)
    sweep_interval_seconds: float = Field(default=5.0, gt=0)
    doctor_grace_sweeps: float = Field(
        default=3.0,
        gt=0,
        description="`aicmo doctor` reports a row the sweeper should have moved once it is "
        "this many sweep intervals late (a sweep in progress is not a finding).",
    )

    # -- default retry policy (a type may declare its own) ------------------------------
    retry_max_attempts: int = Field(default=5, ge=1)
    retry_base_delay_seconds: float = Field(default=2.0, ge=0)
    retry_max_delay_seconds: float = Field(default=600.0, ge=0)
    retry_jitter: float = Field(default=0.2, ge=0, le=1)

    # -- observability -------------------------------------------------------------------
    log_format: Literal["text", "json"] = "text"
    log_level: str = "INFO"

    # -- operations (the aicmo command, health checks) ------------------------------------
    health_timeout_seconds: float = Field(
        default=3.0,
        gt=0,
        description="How long `aicmo health` waits for the broker and for workers to answer.",
    )
    health_max_sweep_age_seconds: float = Field(
        default=60.0,
        gt=0,
        description="`aicmo health` reports beat as down when the last sweep is older than "
        "this (beat sends aol.sweep every sweep_interval_seconds).",
    )

    @field_validator("action_modules", mode="before")
    @classmethod
    def _split_modules(cls, value: object) -> object:
        if isinstance(value, str):
            if value.lstrip().startswith("["):
                return json.loads(value)
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def is_filesystem_broker(self) -> bool:
        return self.broker_url.startswith("filesystem")

    @property
    def is_sentinel_broker(self) -> bool:
        return self.broker_url.startswith("sentinel://")

    @property
    def is_redis_broker(self) -> bool:
        """Redis in any form: plain, TLS, a socket, or found through Sentinel."""
        return self.is_sentinel_broker or self.broker_url.startswith(
            ("redis://", "rediss://", "unix://")
        )

    @field_validator("broker_master_name", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        # compose passes an unset variable as "": no master name, not a blank one.
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _check_broker(self) -> Settings:
        # Never echo the URL: it may carry the primary's password.
        sentinel_urls = [self.broker_url, self.rate_limit_url or ""]
        sentinel = any(url.startswith("sentinel://") for url in sentinel_urls)
        if sentinel and not self.broker_master_name:
            raise ValueError(
                "a sentinel:// URL needs AICMO_BROKER_MASTER_NAME (the name the sentinels "
                "monitor the primary under)"
            )
        if self.is_sentinel_broker:
            for part in self.broker_url.split(";"):
                if not part.strip().startswith("sentinel://"):
                    raise ValueError(
                        "AICMO_BROKER_URL: every ';'-separated part of a Sentinel URL must be "
                        "sentinel://host:port"
                    )
        return self

    # -- gateways and LLM ------------------------------------------------------------------
    # Live mode only: proof mode never reaches a provider. Secrets are SecretStr so they never
    # show in a repr; the gateways register them with aicmo.orchestration.redaction.
    rate_limit_url: str | None = Field(
        default=None,
        description="Where the global rate-limit buckets and LLM budgets live: redis://... "
        "or sentinel://... (with AICMO_BROKER_MASTER_NAME) "
        "(shared by every worker on every host) or file:///path (one host, flock). Default: "
        "AICMO_BROKER_URL when it is Redis, else file var/ratelimits.json.",
    )
    rate_limit_max_wait_seconds: float = Field(
        default=10.0,
        ge=0,
        description="A send waits this long at most for room in its bucket; a longer wait "
        "becomes a RETRY due when the bucket has room.",
    )
    smtp_host: str | None = Field(default=None, description="Set it to send email in live mode.")
    smtp_port: int | None = Field(
        default=None, gt=0, lt=65536, description="Default: 587 starttls, 465 ssl, 25 none."
    )
    smtp_security: Literal["starttls", "ssl", "none"] = "starttls"
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_ca_file: Path | None = Field(
        default=None, description="CA bundle that signs the server's certificate (default: system)."
    )
    smtp_timeout_seconds: float = Field(default=20.0, gt=0, description="Per SMTP operation.")
    smtp_requests_per_minute: float | None = Field(
        default=None, gt=0, description="Global send rate per SMTP host (unset: unlimited)."
    )
    smtp_burst: int = Field(default=5, ge=1)
    email_from: str | None = Field(
        default=None, description="From address when a SEND_EMAIL payload gives none."
    )
    social_webhook_urls: dict[str, SecretStr] = Field(
        default_factory=dict,
        description='JSON {"linkedin": "https://hooks...", "*": "..."}: where POST_SOCIAL posts '
        'per platform ("*": any other). Hook URLs often embed a token, so they are secrets.',
    )
    social_webhook_secret: SecretStr | None = Field(
        default=None, description="HMAC-SHA256 key: requests carry X-Aicmo-Signature."
    )
    social_webhook_token: SecretStr | None = Field(
        default=None, description="Sent as Authorization: Bearer <token>."
    )
    social_connect_timeout_seconds: float = Field(default=5.0, gt=0)
    social_timeout_seconds: float = Field(
        default=20.0, gt=0, description="Hard limit on one whole webhook call."
    )
    social_requests_per_minute: float | None = Field(
        default=30.0, gt=0, description="Global post rate per platform (unset: unlimited)."
    )
    social_burst: int = Field(default=5, ge=1)
    social_encryption_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Fernet keys (comma list, newest first) that encrypt social account "
        "credentials at rest: the first encrypts, every one decrypts, so a new key is "
        "prepended and `aicmo accounts rotate-key` re-encrypts. Make one with "
        "`aicmo accounts new-key`.",
    )
    social_refresh_lease_seconds: float = Field(
        default=30.0,
        gt=0,
        description="How long one worker holds an account's token refresh; another worker "
        "waits for its result meanwhile, and takes over after it.",
    )
    social_refresh_wait_seconds: float = Field(
        default=10.0,
        ge=0,
        description="How long a post waits for another worker's token refresh before the "
        "action is retried later.",
    )
    linkedin_api_version: str = Field(
        default="202511",
        pattern=r"^\d{6}$",
        description="LinkedIn-Version header (YYYYMM) of the versioned /rest API.",
    )
    llm_base_url: str | None = Field(
        default=None,
        description="OpenAI-compatible API root, e.g. https://api.openai.com/v1. Unset: no LLM, "
        "drafts come from templates.",
    )
    llm_api_key: SecretStr | None = None
    llm_model: str = "gpt-4o-mini"
    llm_system_prompt: str = "You write short, friendly, specific B2B outreach messages."
    llm_temperature: float = Field(default=0.7, ge=0, le=2)
    llm_connect_timeout_seconds: float = Field(default=5.0, gt=0)
    llm_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        description="Hard limit on one whole generate() call: rate-limit wait, retries, all.",
    )
    llm_max_retries: int = Field(default=2, ge=0, le=10)
    llm_retry_base_delay_seconds: float = Field(default=1.0, ge=0)
    llm_rate_limit_key: str | None = Field(
        default=None, description="Bucket name for the provider (default: the base URL's host)."
    )
    llm_requests_per_minute: float | None = Field(default=60.0, gt=0)
    llm_burst_requests: int = Field(default=10, ge=1)
    llm_tokens_per_minute: int | None = Field(default=100_000, gt=0)
    llm_daily_token_budget: int | None = Field(default=None, ge=0, description="All campaigns.")
    llm_campaign_daily_token_budget: int | None = Field(default=None, ge=0)
    llm_daily_budget_usd: float | None = Field(default=None, ge=0)
    llm_campaign_daily_budget_usd: float | None = Field(default=None, ge=0)
    llm_usd_per_1k_prompt_tokens: float = Field(default=0.0, ge=0)
    llm_usd_per_1k_completion_tokens: float = Field(default=0.0, ge=0)

    @field_validator("social_encryption_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("social_webhook_urls", mode="after")
    @classmethod
    def _check_webhooks(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        checked: dict[str, SecretStr] = {}
        for platform, url in value.items():
            # The URL is a secret: name the platform, never the value.
            if not url.get_secret_value().startswith(("http://", "https://")):
                raise ValueError(f"the webhook URL for {platform!r} must be http:// or https://")
            checked[platform.strip().lower()] = url
        return checked

    @model_validator(mode="after")
    def _check_gateways(self) -> Settings:
        if self.rate_limit_url and not self.rate_limit_url.startswith(
            ("redis://", "rediss://", "unix://", "sentinel://", "file://")
        ):
            raise ValueError(
                "AICMO_RATE_LIMIT_URL must be redis://, rediss://, unix://, sentinel:// or file://"
            )
        if (self.smtp_username is None) != (self.smtp_password is None):
            raise ValueError("set both AICMO_SMTP_USERNAME and AICMO_SMTP_PASSWORD, or neither")
        if self.smtp_host and self.smtp_ca_file and not self.smtp_ca_file.is_file():
            raise ValueError(f"AICMO_SMTP_CA_FILE {self.smtp_ca_file} is not a file")
        if self.llm_base_url and not self.llm_base_url.startswith(("http://", "https://")):
            raise ValueError("AICMO_LLM_BASE_URL must be http:// or https://")
        priced = self.llm_usd_per_1k_prompt_tokens or self.llm_usd_per_1k_completion_tokens
        if (self.llm_daily_budget_usd or self.llm_campaign_daily_budget_usd) and not priced:
            raise ValueError(
                "a USD budget needs AICMO_LLM_USD_PER_1K_PROMPT_TOKENS and/or "
                "AICMO_LLM_USD_PER_1K_COMPLETION_TOKENS to count spend"
            )
        return self

    # -- the web service (`aicmo serve`: webhooks, console, JSON API, /metrics) ----------
    web_host: str = Field(default="127.0.0.1", description="Address `aicmo serve` binds.")
    web_port: int = Field(default=8000, ge=1, le=65535, description="Port `aicmo serve` binds.")
    web_secret_key: SecretStr | None = Field(
        default=None,
        description="Key that signs session cookies (every web process must share it); "
        "unset: a random key kept in AICMO_WEB_SECRET_FILE.",
    )
    web_secret_file: Path = Field(
        default=Path("var/web-secret.key"),
        description="Where the generated session key is kept (mode 0600) when none is set.",
    )
    web_session_max_age_seconds: int = Field(
        default=12 * 3600, gt=0, description="A console session lasts this long."
    )
    web_secure_cookies: Literal["auto", "always", "never"] = Field(
        default="auto",
        description="Mark cookies Secure: auto = when the request came over https (set "
        "AICMO_WEB_FORWARDED_ALLOW_IPS to the TLS proxy so its X-Forwarded-Proto counts).",
    )
    web_forwarded_allow_ips: str = Field(
        default="127.0.0.1",
        description="Proxies whose X-Forwarded-For/-Proto headers uvicorn trusts.",
    )
    web_metrics_token: SecretStr | None = Field(
        default=None,
        description="When set, GET /metrics needs `Authorization: Bearer <token>`.",
    )
    web_login_max_failures: int = Field(
        default=5, ge=1, description="Failed logins in a row before a user is locked out."
    )
    web_login_lockout_seconds: float = Field(
        default=60.0, gt=0, description="How long a lockout lasts (doubles each time, to 1 h)."
    )
    web_login_attempts_per_minute: int = Field(
        default=20, ge=1, description="Login attempts one client address may make per minute."
    )

    # -- campaigns -------------------------------------------------------------------------
    cam_tick_lease_seconds: float = Field(
        default=330.0,
        gt=0,
        description="Campaign lease of a tick called directly (CAMPAIGN_TICK uses its hard time "
        "limit plus lease_margin_seconds). An expired lease is taken over by the next tick.",
    )
    cam_draft_timeout_seconds: float = Field(
        default=45.0,
        gt=0,
        description="A draft waits this long for the LLM before using the step's template.",
    )
    cam_draft_max_llm_failures: int = Field(
        default=2,
        ge=1,
        description="After this many LLM failures in one tick, the rest of it uses templates.",
    )
    cam_from_address: str = Field(
        default="aicmo@example.com", description="From address of campaigns that set none."
    )
    cam_webhook_secrets: dict[str, WebhookSource] = Field(
        default_factory=dict,
        description='JSON {"typeform": "secret", "crm": {"secret": "...", "campaigns": [3, 7]}}: '
        "the HMAC-SHA256 key of each lead webhook source, and the campaigns it may post "
        'leads into (a plain secret, or "campaigns": "*", allows every campaign). An empty '
        "secret is refused at start-up.",
    )

    @field_validator("cam_webhook_secrets", mode="before")
    @classmethod
    def _read_webhook_sources(cls, value: object) -> object:
        if not isinstance(value, dict):
            return value
        sources: dict[object, object] = {}
        for name, entry in value.items():
            # Errors name the source, never its secret.
            where = f"AICMO_CAM_WEBHOOK_SECRETS[{name!r}]"
            if not isinstance(name, str) or not re.fullmatch(WEBHOOK_SOURCE_PATTERN, name):
                raise ValueError(
                    f"{where}: a source name is 1-64 of a-z 0-9 _ . - (it is the URL's source)"
                )
            if isinstance(entry, str | SecretStr):
                entry = {"secret": entry}
            if isinstance(entry, dict | WebhookSource):
                secret = entry["secret"] if isinstance(entry, dict) else entry.secret
                text = secret.get_secret_value() if isinstance(secret, SecretStr) else secret
                if not isinstance(text, str) or not text.strip():
                    raise ValueError(
                        f"{where}: the secret of {name!r} is empty: anyone could sign for it"
                    )
                if isinstance(entry, dict):
                    try:
                        entry = WebhookSource.model_validate(entry)
                    except ValidationError as exc:
                        problems = "; ".join(
                            f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
                            for error in exc.errors(include_url=False)
                        )
                        raise ValueError(
                            f'{where}: want {{"secret": "...", "campaigns": [campaign ids] or '
                            f'"*"}} ({problems})'
                        ) from None
            sources[name] = entry
        return sources

    cam_webhook_tolerance_seconds: float = Field(
        default=300.0,
        gt=0,
        description="A webhook whose signed timestamp is further from now than this is refused.",
    )
    cam_webhook_max_bytes: int = Field(default=256 * 1024, gt=0)
    cam_capture_batch_size: int = Field(
        default=500, ge=1, le=1000, description="Leads per CAMPAIGN_CAPTURE_LEADS action."
    )
    cam_lead_import_dir: Path = Field(
        default=Path("var/imports"),
        description="FETCH_LEADS reads lead files only from inside this folder (resolved when "
        "the settings are read; a path that escapes it through .. or a symlink is refused). "
        "Never unset: the worker must not read whatever it can.",
    )

    @field_validator("cam_lead_import_dir", mode="before")
    @classmethod
    def _check_import_dir(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            raise ValueError("AICMO_CAM_LEAD_IMPORT_DIR must name a folder (it is never unset)")
        return value

    @field_validator("cam_lead_import_dir", mode="after")
    @classmethod
    def _resolve_import_dir(cls, value: Path) -> Path:
        resolved = value.expanduser().resolve()
        if resolved == Path(resolved.anchor):
            raise ValueError(
                "AICMO_CAM_LEAD_IMPORT_DIR must not be the filesystem root: FETCH_LEADS could "
                "read any file the worker can"
            )
        return resolved

    # -- email outcomes: unsubscribe, provider events, click tracking, brakes ---------------
    public_base_url: str = Field(
        default="http://127.0.0.1:8000",
        description="The public https:// address of `aicmo serve` (behind its TLS proxy): "
        "unsubscribe and click links in every email point here.",
    )
    email_token_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated HMAC keys of unsubscribe and click tokens: the first "
        "signs, any verifies (add a new key first, drop the old one once its mail is "
        "stale). Empty: derived from AICMO_WEB_SECRET_KEY.",
    )
    email_unsubscribe_mailto: str | None = Field(
        default=None,
        description="Address of the List-Unsubscribe mailto: link (default: unsubscribe@ "
        "the sending domain).",
    )
    email_events_tolerance_seconds: float = Field(
        default=300.0,
        gt=0,
        description="Signed provider events (SendGrid, Svix, Mailgun, generic, SNS) older or "
        "newer than this are refused as replays.",
    )
    email_events_max_bytes: int = Field(default=1024 * 1024, gt=0)
    email_sns_cert_url_pattern: str = Field(
        default=r"^https://sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?/SimpleNotificationService-[A-Za-z0-9]+\.pem$",
        description="Regular expression a SigningCertURL must match before it is fetched "
        "(tests point it at a local server).",
    )
    email_sns_ca_file: Path | None = Field(
        default=None, description="CA bundle to fetch SNS signing certificates with (tests)."
    )
    email_sns_topic_arns: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated SNS topics accepted (empty: any topic whose signature "
        "verifies).",
    )
    email_sendgrid_public_key: str | None = Field(
        default=None,
        description="SendGrid Event Webhook verification key (base64 DER, as the dashboard "
        "shows it, or PEM).",
    )
    email_postmark_username: str | None = None
    email_postmark_password: SecretStr | None = Field(
        default=None, description="Basic auth of the Postmark webhook URL."
    )
    email_svix_secrets: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated whsec_... secrets of Svix-signed senders (Resend...).",
    )
    email_mailgun_signing_key: SecretStr | None = None
    email_generic_secret: SecretStr | None = Field(
        default=None,
        description="HMAC key of the generic signed JSON form (X-Aicmo-Signature, as leads).",
    )
    email_soft_bounce_limit: int = Field(
        default=3, ge=1, description="Soft bounces within the window that suppress an address."
    )
    email_soft_bounce_window_days: float = Field(default=7.0, gt=0)
    brake_window_deliveries: int = Field(
        default=1000,
        ge=10,
        description="Brakes look at a campaign's (or sending domain's) last N sent emails.",
    )
    brake_min_deliveries: int = Field(
        default=100,
        ge=1,
        description="A rate is counted over at least this many sends: the first complaint of "
        "a campaign's first 100 sends is already 1%.",
    )
    brake_complaint_rate: float = Field(default=0.003, gt=0, le=1)
    brake_hard_bounce_rate: float = Field(default=0.05, gt=0, le=1)
    brake_domain_enabled: bool = Field(
        default=True, description="Also brake the whole sending domain across campaigns."
    )

    @field_validator(
        "email_token_keys", "email_svix_secrets", "email_sns_topic_arns", mode="before"
    )
    @classmethod
    def _split_list(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    # -- admission (send windows, frequency caps, concurrency per key) --------------------
    concurrency_recheck_seconds: float = Field(
        default=300.0,
        gt=0,
        description="An action parked for a concurrency slot is woken when a holder of its "
        "key finishes; this is only the safety net: it is looked at again after this long.",
    )
    cam_frequency_caps: str = Field(
        default="1/24h,3/7d",
        description="Per-person caps across every campaign: N/period, comma separated "
        "(periods in h or d), e.g. '1/24h,3/7d'. Campaigns may add stricter caps of their own.",
    )
    cam_fair_share: int = Field(
        default=20,
        ge=0,
        description="Fairness: a campaign's first N messages in flight are sent at the normal "
        "broker priority, the rest at the bulk one (6), so a campaign with a large backlog "
        "does not hold back other campaigns' next messages nor transactional mail.",
    )
    cam_message_validity_hours: float = Field(
        default=14 * 24,
        gt=0,
        description="How long after its approval a message may still be sent: a publish the "
        "frequency caps would hold past this is FAILED ('frequency cap') instead of waiting.",
    )

    @field_validator("cam_frequency_caps")
    @classmethod
    def _check_caps(cls, value: str) -> str:
        # The same rule as aicmo.cam.admission.parse_caps (config imports nothing above it).
        for part in value.split(","):
            match = re.match(r"^\s*([1-9]\d*)\s*/\s*(\d+(?:\.\d+)?)\s*[hd]\s*$", part)
            if part.strip() and (match is None or float(match.group(2)) <= 0):
                raise ValueError(f"frequency cap {part.strip()!r} is not N/period, e.g. 1/24h")
        return value

    # -- beat ------------------------------------------------------------------------------
    beat_queue: str = Field(
        default="aol.beat",
        min_length=1,
        description="Queue of beat's own tasks (aol.sweep, cam.*, aol.purge), kept apart from "
        "the actions' queues so a backlog of actions never delays a sweep. Every worker "
        "consumes it unless started with -Q (then list it).",
    )
    beat_ticks_interval_seconds: float = Field(
        default=60.0, gt=0, description="How often beat sends cam.schedule_ticks."
    )
    beat_metrics_interval_seconds: float = Field(
        default=900.0,
        gt=0,
        description="How often beat sends cam.schedule_daily_metrics (it only has to run once "
        "per local day: each day's fetch waits PENDING for the day's end).",
    )
    beat_catch_up: Literal["latest", "none"] = Field(
        default="latest",
        description="Slots missed by more than the tolerance (beat down): 'latest' runs only "
        "the latest one, once; 'none' skips them and the campaign resumes at its next slot.",
    )
    beat_catch_up_tolerance_seconds: float = Field(
        default=300.0,
        gt=0,
        description="A slot the fan-out sees within this long after its time is on time and "
        "always enqueued; at least twice the ticks interval.",
    )
    beat_metrics_lookback_days: int = Field(
        default=2,
        ge=1,
        le=7,
        description="Past local days (not before the campaign was created) whose metrics the "
        "fan-out makes sure exist: days missed while beat was down are fetched once.",
    )
    retention_days: float = Field(
        default=30.0,
        ge=8,
        description="aol.purge deletes terminal actions (and their logs) finished longer ago. "
        "At least 8: beat re-asserts keys up to 7 days old, and a purged key can be reused.",
    )
    purge_batch_size: int = Field(default=5000, ge=1, le=100_000)
    purge_max_seconds: float = Field(
        default=600.0,
        gt=0,
        description="One aol.purge run stops after this long (the next goes on).",
    )
    log_partitions_ahead: int = Field(
        default=2,
        ge=1,
        le=24,
        description="PostgreSQL: aol.purge keeps the execution log's monthly partitions made "
        "this many months ahead of the current one.",
    )
    partition_lock_timeout_ms: int = Field(
        default=500,
        ge=10,
        le=60_000,
        description="PostgreSQL: how long attaching or dropping a log partition may wait for "
        "its lock (workers' inserts queue behind it meanwhile); it gives up and retries later.",
    )
    purge_at_utc: str = Field(
        default="03:17",
        pattern=r"^([01]\d|2[0-3]):[0-5]\d$",
        description="Daily UTC time (HH:MM) at which beat sends aol.purge.",
    )
    # Tests only: an accelerated clock for the fan-out (virtual = virtual_start + (real -
    # real_start) * speed). Unset in production: the fan-out uses the real time.
    beat_test_clock_real_start: datetime | None = None
    beat_test_clock_virtual_start: datetime | None = None
    beat_test_clock_speed: float = Field(default=1.0, gt=0, le=86_400)

    @model_validator(mode="after")
    def _check_beat(self) -> Settings:
        speed = self.beat_test_clock_speed if self.beat_test_clock_real_start else 1.0
        ticks_virtual = self.beat_ticks_interval_seconds * speed
        if self.beat_catch_up_tolerance_seconds < 2 * ticks_virtual:
            raise ValueError(
                "AICMO_BEAT_CATCH_UP_TOLERANCE_SECONDS must be at least twice "
                "AICMO_BEAT_TICKS_INTERVAL_SECONDS, or a late fan-out would skip slots"
            )
        clock = (self.beat_test_clock_real_start, self.beat_test_clock_virtual_start)
        if (clock[0] is None) != (clock[1] is None):
            raise ValueError("set both AICMO_BEAT_TEST_CLOCK_REAL_START and _VIRTUAL_START")
        if any(t is not None and t.tzinfo is None for t in clock):
            raise ValueError("AICMO_BEAT_TEST_CLOCK_* times need a timezone")
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def reload_settings() -> Settings:
    """Forget the cached settings (tests and CLI options change the environment)."""
    get_settings.cache_clear()
    return get_settings()
