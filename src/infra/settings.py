"""Settings, read once at the entry point from ``SWITCHBOARD_*`` variables (and ``.env``).

Nothing here connects to anything: the settings object is built by the CLI and passed down.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

LogFormat = Literal["console", "json"]


class Settings(BaseSettings):
    """Every knob of Switchboard. Defaults suit `switchboard dev`; production sets the URLs."""

    model_config = SettingsConfigDict(
        env_prefix="SWITCHBOARD_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
    )

    # Processes and HTTP
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8080, ge=0, le=65535, description="0 picks a free port")
    public_base_url: str | None = Field(
        default=None,
        description="Public URL the platforms call (Twilio signs it); defaults to the bind address",
    )
    trust_forwarded_headers: bool = False
    http_header_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        description="A request's line and headers must arrive within this (a new connection "
        "that sends nothing is closed after it too)",
    )
    http_body_timeout_seconds: float = Field(
        default=20.0,
        gt=0,
        description="A request's body must arrive within this once its headers did",
    )
    http_max_header_bytes: int = Field(
        default=65_536, ge=4096, description="Request line and headers larger than this: 431"
    )
    http_keep_alive_timeout_seconds: int = Field(
        default=5, ge=1, description="An idle keep-alive connection is closed after this"
    )
    data_dir: Path = Path(".switchboard")
    log_level: str = "INFO"
    log_format: LogFormat = "console"

    # PostgreSQL
    database_url: SecretStr = SecretStr("postgresql+asyncpg://postgres@127.0.0.1:5432/switchboard")
    database_pool_size: int = Field(default=10, ge=1)
    database_max_overflow: int = Field(default=10, ge=0)

    # Kafka
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    kafka_topic_prefix: str = "switchboard."
    kafka_topic_partitions: int = Field(default=6, ge=1)
    kafka_replication_factor: int = Field(default=1, ge=1)
    kafka_create_topics: bool = True
    kafka_min_insync_replicas: int | None = Field(
        default=None,
        ge=1,
        description="min.insync.replicas of the topics Switchboard creates (broker default if "
        "unset); 2 with a replication factor of 3, so acks=all survives one broker down",
    )
    kafka_enable_idempotence: bool = Field(
        default=True, description="Off for brokers without idempotent producers (the embedded one)"
    )
    kafka_client_id: str = "switchboard"
    kafka_request_timeout_ms: int = Field(default=10_000, ge=100)
    kafka_linger_ms: int = Field(default=2, ge=0)
    kafka_max_batch_size: int = Field(
        default=1_048_576, ge=16_384, description="aiokafka's 16 KB default caps ingress throughput"
    )
    kafka_consumer_group: str = "switchboard-outbox"
    kafka_stop_timeout_seconds: float = Field(
        default=3.0,
        gt=0,
        description="Stopping: records the broker has not acknowledged by then are given up "
        "(their owners keep them: the spool, the outbox rows)",
    )
    kafka_transactions: bool = Field(
        default=False,
        description="The command consumer publishes dead letters and commits its offsets in one "
        "Kafka transaction (docs/kafka.md, 'Delivery guarantees'); off for brokers without "
        "transactions (the embedded one, some managed clusters)",
    )

    # Outbox intake
    outbox_api_runs_consumers: bool = Field(
        default=False,
        description="The HTTP process also runs the command and receipts consumers and the "
        "lifecycle relay (single-process deployments); normally `switchboard outbox` runs them",
    )
    outbox_whatsapp_window_check: bool = Field(
        default=True,
        description="Refuse free-form WhatsApp messages outside the 24-hour customer window",
    )
    outbox_default_ttl_seconds: float = Field(
        default=86_400.0, gt=0, description="not_after when a command gives none: acceptance + this"
    )
    outbox_consumer_batch_size: int = Field(
        default=200, ge=1, le=10_000, description="Records taken per poll (bounds in-flight work)"
    )
    outbox_receipts_consumer_group: str | None = Field(
        default=None,
        description="Group of the receipts consumer; default <kafka_consumer_group>-receipts",
    )
    outbox_consumer_session_timeout_ms: int = Field(
        default=10_000,
        ge=6_000,  # Kafka's default group.min.session.timeout.ms: below it the join is refused
        description="Consumer session: how soon a dead process's partitions go to another one",
    )
    outbox_pending_receipt_ttl: float = Field(
        default=900.0,
        gt=0,
        description="A receipt that arrives before its message's platform id is recorded is "
        "kept this long (seconds) waiting for it, then dropped",
    )
    # end Outbox intake

    # Outbox delivery (the delivery worker, src/outbox/worker.py; docs/outbox-delivery.md)
    outbox_worker_id: str | None = Field(
        default=None, description="Lease owner name; default host:pid:random (unique per process)"
    )
    outbox_max_in_flight: int = Field(
        default=256, ge=1, description="Claimed messages held by one process (waiting or sending)"
    )
    outbox_claim_batch: int = Field(default=256, ge=1, description="Rows claimed per round trip")
    outbox_http_timeout: float = Field(default=10.0, gt=0, description="Whole send exchange")
    outbox_message_lease: float = Field(
        default=30.0,
        gt=0,
        description="A claimed message's lease; longer than http_timeout + claim_lookahead + 5 s",
    )
    outbox_channel_lease: float = Field(
        default=15.0, gt=0, description="Channel ownership lease (fail-over time of a dead owner)"
    )
    outbox_channel_renew_interval: float = Field(default=3.0, gt=0)
    outbox_channel_grace: float = Field(
        default=5.0,
        ge=0,
        description="A channel whose due work waited this long with nobody holding it is taken "
        "by any worker, even above its fair share",
    )
    outbox_handover_gap: float = Field(
        default=1.0, ge=0, description="A released channel is taken over after this (rate window)"
    )
    outbox_claim_lookahead: float = Field(
        default=2.0, gt=0, description="Seconds of a channel's rate claimed ahead of the pacer"
    )
    outbox_poll_interval: float = Field(default=0.1, gt=0, description="Idle claim polling")
    outbox_flush_interval: float = Field(
        default=0.02, ge=0, description="Outcome batching: longest wait before a write"
    )
    outbox_maintenance_interval: float = Field(
        default=2.0, gt=0, description="Expired message leases and not_after sweeps"
    )
    outbox_retry_schedule: tuple[float, ...] = Field(
        default=(5.0, 30.0, 120.0, 600.0, 1800.0, 3600.0, 7200.0),
        min_length=1,
        description="Seconds after attempt 1, 2, ...; the last repeats until not_after (JSON)",
    )
    outbox_retry_jitter: float = Field(default=0.2, ge=0, lt=1)
    outbox_shutdown_deadline: float = Field(
        default=10.0, ge=0, description="Stop: in-flight sends may finish within this"
    )
    outbox_pacing_enabled: bool = Field(
        default=True, description="Off only for benchmarks: no rate limit at all"
    )
    outbox_pacing_margin: float = Field(
        default=0.015, ge=0, lt=0.5, description="Pace this fraction below the rate (jitter room)"
    )
    outbox_whatsapp_pair_interval: float | None = Field(
        default=None, gt=0, description="Seconds between sends to one WhatsApp user (off: None)"
    )
    outbox_template_sync_interval: float = Field(
        default=3600.0, gt=0, description="Seconds between WhatsApp template registry syncs"
    )
    # end Outbox delivery

    # Outbox operations (metrics sampler, retention, the worker's HTTP port; docs/operations.md)
    outbox_http_port: int = Field(
        default=8081,
        ge=0,
        le=65535,
        description="`switchboard outbox` serves /healthz, /readyz, /metrics here (0: free port)",
    )
    outbox_metrics_interval: float = Field(
        default=5.0, gt=0, description="Seconds between samples of the outbox gauges"
    )
    outbox_retention_days: float = Field(
        default=30.0,
        gt=0,
        description="Finished messages (with attempts) and published lifecycle events older "
        "than this are deleted",
    )
    outbox_retention_interval: float = Field(
        default=300.0, gt=0, description="Seconds between retention runs"
    )
    outbox_retention_batch_size: int = Field(
        default=1000, ge=1, le=100_000, description="Rows deleted per statement (short locks)"
    )
    # end Outbox operations

    # Security
    admin_api_key: SecretStr | None = Field(
        default=None, description="Bootstrap admin API key; accepted with every scope"
    )
    encryption_keys: SecretStr | None = Field(
        default=None,
        description="Fernet keys, comma-separated: the first encrypts, all decrypt",
    )

    allow_api_base_url_override: bool = Field(
        default=False,
        description="Channels may set any api_base_url, loopback included (dev and tests only: "
        "the channel's credentials are sent there)",
    )
    api_base_url_allowed_hosts: tuple[str, ...] = Field(
        default=(),
        description="Hosts a channel's api_base_url may name (HTTPS, public addresses) when the "
        "override is not allowed in general, e.g. an egress proxy (JSON list)",
    )

    # Gateway (ingress) -- owned by src/gateway; see docs/ingress.md
    webhook_max_body_bytes: int = Field(
        default=3 * 1024 * 1024, ge=1024, description="Larger webhooks get 413 while streaming"
    )
    gateway_publish_timeout_seconds: float = Field(
        default=2.0, gt=0, description="Broker slower than this: the webhook goes to the spool"
    )
    gateway_broker_backoff_seconds: float = Field(
        default=1.0, ge=0, description="After a failed publish, spool directly for this long"
    )
    gateway_db_timeout_seconds: float = Field(default=2.0, gt=0)
    gateway_db_pool_size: int = Field(default=32, ge=1)
    gateway_channel_cache_ttl_seconds: float = Field(
        default=5.0, ge=0, description="Channel changes (disable, rotation) apply within this"
    )
    gateway_dedup_window_days: float = Field(default=8.0, ge=7.0)
    gateway_archive_retention_days: float = Field(default=7.0, gt=0)
    gateway_purge_interval_seconds: float = Field(default=300.0, gt=0)
    gateway_relay_interval_seconds: float = Field(default=0.5, gt=0)
    gateway_relay_batch_size: int = Field(default=500, ge=1)
    gateway_batch_max_size: int = Field(
        default=128, ge=1, description="Webhooks claimed and committed together (group commit)"
    )
    gateway_batch_max_delay_seconds: float = Field(
        default=0.002,
        ge=0,
        description="A forming batch waits at most this for the previous batch's claim",
    )
    gateway_batch_max_in_flight: int = Field(
        default=16, ge=1, description="Batches in flight at once (each holds a DB connection)"
    )
    gateway_spool_sample_interval_seconds: float = Field(
        default=5.0, gt=0, description="How often each relay counts the spool (a metric)"
    )
    webhook_max_inflight_body_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=1024,
        description="Webhook body bytes held at once by one process (received, not yet "
        "answered); a webhook that would exceed it: 503 with Retry-After",
    )
    gateway_channel_stale_seconds: float = Field(
        default=300.0,
        ge=0,
        description="PostgreSQL unreachable: webhooks use the last known channel (loaded at most "
        "this long ago) instead of 503",
    )
    # /Gateway

    # Conversations -- owned by src/conversations; see docs/conversations.md
    conversations_consumer_group: str = "switchboard-conversations"
    conversations_consumer_batch_size: int = Field(default=200, ge=1, le=10_000)
    conversations_timer_interval: float = Field(
        default=1.0, gt=0, description="How often due unanswered-conversation timers are checked"
    )
    conversations_relay_interval: float = Field(default=0.2, gt=0)
    conversations_retention_days: float = Field(
        default=90.0, gt=0, description="Conversations idle this long are deleted with timelines"
    )
    conversations_api_runs_workers: bool = Field(
        default=False,
        description="The HTTP process also runs the conversation consumer, timers and relay "
        "(single-process deployments); normally `switchboard outbox` runs them",
    )
    # /Conversations

    @field_validator("kafka_topic_prefix")
    @classmethod
    def _prefix_is_topic_safe(cls, value: str) -> str:
        allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
        if not set(value) <= allowed:
            raise ValueError("may contain only letters, digits, '.', '_' and '-'")
        return value

    def topic(self, name: str) -> str:
        """Full topic name for a logical one (``inbound.v1`` → ``switchboard.inbound.v1``)."""
        return f"{self.kafka_topic_prefix}{name}"

    @property
    def topics(self) -> dict[str, str]:
        return {name: self.topic(name) for name in TOPICS}


TOPICS = ("inbound.v1", "outbound.commands.v1", "outbound.events.v1", "deadletter.v1")
