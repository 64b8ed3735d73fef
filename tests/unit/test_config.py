import pytest
from pydantic import ValidationError

from worker.config import ConfigError, load_settings, unknown_variables


def test_defaults_match_the_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("INPUT_TOPIC", "OUTPUT_TOPIC", "DLQ_TOPIC", "GROUP_ID"):
        monkeypatch.delenv(f"MODSTREAM_{name}", raising=False)
    s = load_settings()
    assert (s.input_topic, s.output_topic, s.dlq_topic, s.group_id) == (
        "posts",
        "verdicts",
        "posts.dlq",
        "modstream",
    )


def test_environment_is_read_and_settings_are_frozen(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODSTREAM_KAFKA_BOOTSTRAP_SERVERS", "a:1, b:2")
    monkeypatch.setenv("MODSTREAM_METRICS_PORT", "9999")
    s = load_settings()
    assert s.bootstrap_servers == ["a:1", "b:2"] and s.metrics_port == 9999
    with pytest.raises(ValidationError):
        s.metrics_port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MODSTREAM_METRICS_PORT", "not-a-port"),
        ("MODSTREAM_KAFKA_BOOTSTRAP_SERVERS", "nohostport"),
        ("MODSTREAM_REDIS_URL", "http://x"),
        ("MODSTREAM_BATCH_MAX_SIZE", "0"),
    ],
)
def test_a_wrong_setting_fails_with_its_name(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=name):
        load_settings()


def test_sasl_needs_a_mechanism(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODSTREAM_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    with pytest.raises(ConfigError, match="kafka_sasl_mechanism"):
        load_settings()


def test_secrets_do_not_print(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODSTREAM_REDIS_URL", "redis://:hunter2@host:6379/0")
    assert "hunter2" not in repr(load_settings())


def test_env_file(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("MODSTREAM_GROUP_ID", raising=False)
    f = tmp_path / "settings.env"
    f.write_text("MODSTREAM_GROUP_ID=from-file\n")
    assert load_settings(f).group_id == "from-file"


def test_model_replicas_share_the_token_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    from worker.app import batch_limits

    monkeypatch.setenv("MODSTREAM_BATCH_TOKEN_BUDGET", "8192")
    settings = load_settings()
    assert batch_limits(settings, 1).token_budget == 8192
    assert batch_limits(settings, 2).token_budget == 4096  # two batches in the model at once
    assert batch_limits(settings, 3).token_budget == 2730
    limits = batch_limits(settings, 2)
    assert (limits.max_size, limits.max_wait_s) == (
        settings.batch_max_size,
        settings.batch_max_wait_ms / 1000,
    )


def test_a_missing_env_file_is_an_error_not_an_empty_one(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match="no such file"):
        load_settings(tmp_path / "settings.env")


def test_a_line_of_the_env_file_that_names_no_setting_is_named_as_written(
    tmp_path,  # type: ignore[no-untyped-def]
) -> None:
    f = tmp_path / "settings.env"
    f.write_text("MODSTREAM_BATCH_MAXSIZE=3\n")
    with pytest.raises(ConfigError) as err:
        load_settings(f)
    message = str(err.value)
    assert "MODSTREAM_BATCH_MAXSIZE (in" in message and "MODSTREAM_MODSTREAM_" not in message
    assert "did you mean MODSTREAM_BATCH_MAX_SIZE?" in message


def test_misspelt_variables_are_found_and_service_links_are_not() -> None:
    environ = {
        "MODSTREAM_BATCH_MAXSIZE": "3",  # misspelt: its setting would keep its default
        "MODSTREAM_LOG_LEVEL": "INFO",  # a setting
        "MODSTREAM_METRIC_PORT": "9400",  # misspelt too, though shaped like a service link
        "MODSTREAM_SERVICE_HOST": "10.0.0.1",  # Kubernetes' links to a Service "modstream"
        "MODSTREAM_PORT": "tcp://10.0.0.1:9400",
        "MODSTREAM_PORT_9400_TCP": "tcp://10.0.0.1:9400",
        "MODSTREAM_REDIS_SERVICE_HOST": "10.0.0.2",  # and to a Service "modstream-redis"
        "MODSTREAM_REDIS_SERVICE_PORT_REDIS": "6379",
        "MODSTREAM_REDIS_PORT": "tcp://10.0.0.2:6379",
        "MODSTREAM_REDIS_PORT_6379_TCP_ADDR": "10.0.0.2",
        "HOME": "/root",
    }
    assert unknown_variables(environ) == [
        "MODSTREAM_BATCH_MAXSIZE: not a setting (did you mean MODSTREAM_BATCH_MAX_SIZE?)",
        "MODSTREAM_METRIC_PORT: not a setting (did you mean MODSTREAM_METRICS_PORT?)",
    ]


def test_an_empty_pseudonym_key_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODSTREAM_PSEUDONYM_KEY", "")
    with pytest.raises(ConfigError, match="MODSTREAM_PSEUDONYM_KEY"):
        load_settings()


def test_the_development_key_is_told_apart(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODSTREAM_PSEUDONYM_KEY", raising=False)
    assert load_settings().development_key
    monkeypatch.setenv("MODSTREAM_PSEUDONYM_KEY", "a-real-secret")
    assert not load_settings().development_key
