"""The Sentinel and PgBouncer settings: validation, and what they turn into for kombu,
psycopg and the rate limits (the failover and pooler scenarios run them for real in
tests/hosts)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from aicmo.config import Settings
from aicmo.ratelimit import store_url
from aicmo.redis_client import SentinelURL, redis_from_url
from tasks.config import broker_options

SENTINELS = "sentinel://:s3cret@10.0.0.1:26379/2;sentinel://10.0.0.2:26380;sentinel://10.0.0.3"


def test_a_sentinel_broker_needs_a_master_name_and_never_echoes_the_url() -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(broker_url=SENTINELS)
    assert "AICMO_BROKER_MASTER_NAME" in str(caught.value)
    assert "s3cret" not in str(caught.value)
    with pytest.raises(ValidationError, match="every ';'-separated part"):
        Settings(broker_url="sentinel://a:1;redis://b:2", broker_master_name="m")
    with pytest.raises(ValidationError, match="AICMO_BROKER_MASTER_NAME"):
        Settings(rate_limit_url="sentinel://a:1")
    # compose passes an unset variable as "": that is no name, not a valid one.
    assert Settings(broker_master_name="").broker_master_name is None


def test_kombu_gets_the_master_name_and_bounded_sentinel_waits() -> None:
    settings = Settings(
        broker_url=SENTINELS, broker_master_name="aicmo", broker_sentinel_password="pw"
    )
    assert settings.is_sentinel_broker and settings.is_redis_broker
    options = broker_options(settings)
    assert options["master_name"] == "aicmo"
    assert options["sentinel_kwargs"]["password"] == "pw"
    assert options["sentinel_kwargs"]["socket_timeout"] > 0
    assert "master_name" not in broker_options(Settings(broker_url="redis://r:6379/0"))


def test_the_rate_limits_follow_a_sentinel_broker() -> None:
    # Not a per-host file: every worker on every host must share the buckets.
    settings = Settings(broker_url=SENTINELS, broker_master_name="aicmo")
    assert store_url(settings) == SENTINELS


def test_sentinel_urls_parse_as_kombu_reads_them() -> None:
    parsed = SentinelURL(SENTINELS)
    assert parsed.sentinels == [("10.0.0.1", 26379), ("10.0.0.2", 26380), ("10.0.0.3", 26379)]
    assert (parsed.db, parsed.password) == (2, "s3cret")
    with pytest.raises(ValueError, match="sentinel://host:port") as caught:
        SentinelURL("sentinel://:pw@h:1;redis://:hidden@x:2")
    assert "hidden" not in str(caught.value)
    with pytest.raises(ValueError, match="master name"):
        redis_from_url(SENTINELS)


def test_the_pooler_setting_turns_prepared_statements_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from aicmo import db
    from aicmo.config import reload_settings

    monkeypatch.setenv("AICMO_DATABASE_POOLER", "transaction")
    reload_settings()
    try:
        # The engine's pool and the store's own connection both open with these (through
        # PgBouncer for real: tests/hosts/test_pgbouncer.py).
        assert db.pooler_connect_args() == {"prepare_threshold": None}
    finally:
        monkeypatch.delenv("AICMO_DATABASE_POOLER")
        reload_settings()
    assert db.pooler_connect_args() == {}
    with pytest.raises(ValidationError):
        Settings(database_pooler="statement")
