"""The dev stack's shapes, rendered without starting anything: a cluster's quorum and port
blocks, the TLS listeners, and export lines that name files instead of passwords."""

from __future__ import annotations

from pathlib import Path

from touchstream.devstack import StackConfig
from touchstream.devstack.kafka import properties_text
from touchstream.devstack.paths import info
from touchstream.devstack.tls import SECRETS, material


def _props(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#") and "=" in line)


def test_one_broker_keeps_the_standalone_quorum_and_plaintext_only(tmp_path: Path) -> None:
    cfg = StackConfig(root=tmp_path, kafka_port=30000, kafka_controller_port=30001)
    props = _props(properties_text(cfg, cfg.kafka_nodes[0]))
    assert props["controller.quorum.bootstrap.servers"] == "127.0.0.1:30001"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:30000,CONTROLLER://127.0.0.1:30001"
    assert (props["offsets.topic.replication.factor"], props["min.insync.replicas"]) == ("1", "1")
    assert "sasl.enabled.mechanisms" not in props and cfg.kafka_bootstrap == "127.0.0.1:30000"


def test_a_cluster_votes_with_every_node_and_replicates_internal_topics(tmp_path: Path) -> None:
    cfg = StackConfig(root=tmp_path, kafka_port=30000, kafka_controller_port=30001, brokers=3)
    nodes = cfg.kafka_nodes
    assert [(n.node_id, n.port, n.controller_port, n.dir.name) for n in nodes] == [
        (1, 30000, 30001, "kafka"), (2, 30010, 30011, "kafka-2"), (3, 30020, 30021, "kafka-3")]
    props = [_props(properties_text(cfg, n)) for n in nodes]
    assert {p["controller.quorum.voters"] for p in props} == {
        "1@127.0.0.1:30001,2@127.0.0.1:30011,3@127.0.0.1:30021"}
    assert [p["node.id"] for p in props] == ["1", "2", "3"]
    assert props[2]["advertised.listeners"] == "PLAINTEXT://127.0.0.1:30020"
    assert (props[0]["default.replication.factor"], props[0]["min.insync.replicas"]) == ("3", "2")
    assert cfg.kafka_bootstrap == "127.0.0.1:30000,127.0.0.1:30010,127.0.0.1:30020"


def test_tls_adds_sasl_ssl_and_mutual_tls_listeners_and_prints_no_secret(tmp_path: Path) -> None:
    cfg = StackConfig(root=tmp_path, kafka_port=30000, kafka_controller_port=30001, pg_port=30500, tls=True)
    material(cfg.root).ensure()
    props = _props(properties_text(cfg, cfg.kafka_nodes[0]))
    assert props["listeners"] == ("PLAINTEXT://127.0.0.1:30000,SASL_SSL://127.0.0.1:30002,SSL://127.0.0.1:30003,"
                                  "CONTROLLER://127.0.0.1:30001")
    assert props["sasl.enabled.mechanisms"] == "SCRAM-SHA-512,SCRAM-SHA-256,PLAIN"
    assert props["listener.name.ssl.ssl.client.auth"] == "required"
    stack = info(cfg)
    assert stack.secure["TOUCHSTREAM_KAFKA_BOOTSTRAP"] == "127.0.0.1:30002"
    assert "sslmode=verify-full" in stack.secure["TOUCHSTREAM_PG_WRITER_DSN"]
    lines = stack.export_lines()
    secrets = [material(cfg.root).secret(name) for name in SECRETS]
    assert not [s for s in secrets if s in lines] and not [s for s in secrets if s in repr(stack)]
    assert f"$(cat {material(cfg.root).secret_file('sasl')})" in lines
    assert stack.env() == {"TOUCHSTREAM_KAFKA_BOOTSTRAP": "127.0.0.1:30000",
                           "TOUCHSTREAM_PG_DSN": "postgresql://postgres:ts-dev-password@127.0.0.1:30500/touchstream"}


def test_private_stacks_keep_off_the_checkouts_stack_ports() -> None:
    from touchstream.devstack.process import free_port_block, stack_port

    assert all(stack_port(p) for p in (19092, 29092, 39093, 49122, 15432, 35432, 6901))
    assert not any(stack_port(p) for p in (30000, 29080, 25440, 7000))
    for _ in range(20):
        base = free_port_block(30)
        assert not any(stack_port(p) for p in range(base, base + 30))


def test_the_default_dsn_is_the_stacks_with_its_password_and_masks_nothing_else(tmp_path: Path) -> None:
    """Every component's default DSN reaches the stack as it is (password included), and the
    log handlers, which mask the settings' secrets wherever they appear, leave the rest alone."""
    from schemas.logs import Redactor, secrets_of
    from schemas.settings import PostgresSettings
    from touchstream.devstack.paths import PG_PASSWORD

    default = PostgresSettings.model_fields["pg_dsn"].default
    assert default == StackConfig(root=tmp_path).pg_dsn() and f":{PG_PASSWORD}@" in default
    redact = Redactor(secrets_of(PostgresSettings(pg_dsn=default)))
    line = "component=sink logger=touchstream.sink topic=touchstream.hits db=touchstream"
    assert redact(line) == line
    assert redact(f"dsn={default}") == "dsn=postgresql://postgres:***@127.0.0.1:15432/touchstream"


def test_the_stack_password_can_be_overridden_and_its_dsn_carries_it_quoted(tmp_path: Path, monkeypatch) -> None:
    """TOUCHSTREAM_STACK_PG_PASSWORD: a stack of one's own on a shared machine. Unset or empty: the
    documented default, so every default DSN still reaches a default stack."""
    from urllib.parse import unquote, urlsplit

    import pytest

    from touchstream.devstack.paths import PG_PASSWORD

    monkeypatch.setenv("TOUCHSTREAM_STACK_DIR", str(tmp_path))
    for unset in (None, ""):
        if unset is None:
            monkeypatch.delenv("TOUCHSTREAM_STACK_PG_PASSWORD", raising=False)
        else:
            monkeypatch.setenv("TOUCHSTREAM_STACK_PG_PASSWORD", unset)
        assert StackConfig.from_env().pg_password == PG_PASSWORD
        assert f":{PG_PASSWORD}@" in StackConfig.from_env().pg_dsn()
    own = "s3cret/it's@mine:%"
    monkeypatch.setenv("TOUCHSTREAM_STACK_PG_PASSWORD", own)
    cfg = StackConfig.from_env()
    parts = urlsplit(cfg.pg_dsn())
    assert unquote(parts.password or "") == own and parts.hostname == "127.0.0.1" and parts.path == "/touchstream"
    assert own not in repr(cfg) and PG_PASSWORD not in cfg.pg_dsn()
    monkeypatch.setenv("TOUCHSTREAM_STACK_PG_PASSWORD", "two\nlines")
    with pytest.raises(SystemExit, match="TOUCHSTREAM_STACK_PG_PASSWORD"):
        StackConfig.from_env()
