"""modstream_dev/stack.py: how a test or a benchmark phase sets its run up (no services)."""

import pytest

from modstream_dev.stack import child_env, run_settings, wait_for


def test_a_run_has_its_own_topics_and_group_and_overrides_win() -> None:
    s = run_settings("k:9092", "redis://r:6379/0", "abc", batch_max_size=8, group_id="g")
    assert (s.input_topic, s.output_topic, s.dlq_topic) == (
        "posts-abc",
        "verdicts-abc",
        "posts-abc.dlq",
    )
    assert s.group_id == "g" and s.batch_max_size == 8
    assert s.metrics_port == 0 and s.kafka_bootstrap_servers == "k:9092"


def test_child_env_carries_the_run_and_nothing_inherited(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODSTREAM_OUTPUT_TOPIC", "live-verdicts")
    monkeypatch.setenv("MODSTREAM_STORE_TEXT", "true")
    monkeypatch.setenv("SOMETHING_ELSE", "kept")
    s = run_settings(
        "k:9092", "redis://u:secret@r:6379/0", "abc", redis_key_prefix="p:", redis_ttl_seconds=60
    )
    env = child_env(s, MODSTREAM_BATCH_MAX_SIZE="64", MODSTREAM_METRICS_PORT="9999")
    assert env["MODSTREAM_OUTPUT_TOPIC"] == "verdicts-abc"
    assert "MODSTREAM_STORE_TEXT" not in env and env["SOMETHING_ELSE"] == "kept"
    assert env["MODSTREAM_REDIS_URL"] == "redis://u:secret@r:6379/0"
    assert (env["MODSTREAM_REDIS_KEY_PREFIX"], env["MODSTREAM_REDIS_TTL_SECONDS"]) == ("p:", "60")
    assert (env["MODSTREAM_BATCH_MAX_SIZE"], env["MODSTREAM_METRICS_PORT"]) == ("64", "9999")


def test_wait_for_returns_once_the_condition_holds_and_names_what_it_gave_up_on() -> None:
    answers = iter([False, False, True])
    wait_for(lambda: next(answers), 60, "the third try", every_s=0)
    with pytest.raises(TimeoutError, match="waiting for the impossible"):
        wait_for(lambda: False, 0, "the impossible", every_s=0)
