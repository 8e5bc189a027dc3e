"""One place builds every Kafka client's security arguments (schemas.kafka_security): each
protocol gives aiokafka and Faust what they need, bad combinations are refused at start, and
the secrets stay out of reprs."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from faust.auth import SASLCredentials, SSLCredentials
from pydantic import ValidationError

from schemas.kafka_security import KafkaConnection
from schemas.settings import KafkaSettings
from touchstream.devstack.tls import TlsMaterial

PASSWORD = "sasl-Secret-4711"


@pytest.fixture(scope="module")
def material(tmp_path_factory: pytest.TempPathFactory) -> TlsMaterial:
    made = TlsMaterial(tmp_path_factory.mktemp("tls"))
    made.ensure()
    return made


def test_plaintext_is_the_default_and_adds_nothing() -> None:
    conn = KafkaSettings(kafka_bootstrap="a:9092, b:9092").kafka_connection()
    assert conn.client_args() == {"bootstrap_servers": "a:9092, b:9092", "security_protocol": "PLAINTEXT"}
    assert conn.hosts == ["a:9092", "b:9092"]
    assert conn.faust_credentials() is None
    assert KafkaConnection.of("h:1") == KafkaConnection("h:1") and KafkaConnection.of(conn) is conn


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_ssl_gives_aiokafka_the_mechanism_the_user_and_a_verifying_context(
        mechanism: str, material: TlsMaterial) -> None:
    conn = KafkaSettings(kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism=mechanism,
                         kafka_sasl_username="ts", kafka_sasl_password=PASSWORD,
                         kafka_ssl_cafile=material.ca_cert).kafka_connection()
    args = conn.client_args()
    context = args.pop("ssl_context")
    assert args == {"bootstrap_servers": "127.0.0.1:19092", "security_protocol": "SASL_SSL",
                    "sasl_mechanism": mechanism, "sasl_plain_username": "ts", "sasl_plain_password": PASSWORD}
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.get_ca_certs()[0]["subject"] == ((("commonName", "Touchstream dev stack CA"),),)
    credentials = conn.faust_credentials()
    assert isinstance(credentials, SASLCredentials)
    assert (credentials.protocol.value, credentials.mechanism.value) == ("SASL_SSL", mechanism)
    assert credentials.ssl_context is context  # one context per set of files, shared by every client
    assert PASSWORD not in repr(conn) and PASSWORD not in repr(credentials)


def test_sasl_plaintext_has_no_context() -> None:
    conn = KafkaConnection("h:1", "SASL_PLAINTEXT", "SCRAM-SHA-256", "u", PASSWORD)
    assert "ssl_context" not in conn.client_args()
    assert conn.faust_credentials().protocol.value == "SASL_PLAINTEXT"


def test_ssl_with_a_client_certificate_and_an_encrypted_key(material: TlsMaterial) -> None:
    key_password = material.secret("client-key")
    settings = KafkaSettings(kafka_security_protocol="SSL", kafka_ssl_cafile=material.ca_cert,
                             kafka_ssl_certfile=material.client_cert, kafka_ssl_keyfile=material.client_key,
                             kafka_ssl_key_password=key_password, kafka_ssl_check_hostname=False)
    conn = settings.kafka_connection()
    args = conn.client_args()
    assert args["security_protocol"] == "SSL" and "sasl_mechanism" not in args
    assert not args["ssl_context"].check_hostname and args["ssl_context"].verify_mode == ssl.CERT_REQUIRED
    assert isinstance(conn.faust_credentials(), SSLCredentials)
    assert key_password not in repr(conn) and key_password not in repr(settings)
    wrong = KafkaConnection("h:1", "SSL", cafile=material.ca_cert, certfile=material.client_cert,
                            keyfile=material.client_key, key_password="not-the-password")
    with pytest.raises(ssl.SSLError):
        wrong.ssl_context()


@pytest.mark.parametrize("settings, complaint", [
    ({"kafka_security_protocol": "SASL_SSL"}, "TOUCHSTREAM_KAFKA_SASL_USERNAME"),
    ({"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_username": "u"}, "TOUCHSTREAM_KAFKA_SASL_PASSWORD"),
    ({"kafka_security_protocol": "SASL_SSL", "kafka_sasl_username": "u", "kafka_sasl_password": "p",
      "kafka_sasl_mechanism": "GSSAPI"}, "kafka_sasl_mechanism"),
    ({"kafka_security_protocol": "TLS"}, "kafka_security_protocol"),
    ({"kafka_ssl_keyfile": "/etc/hostname"}, "go together"),
    ({"kafka_ssl_cafile": "/nonexistent/ca.pem"}, "is not a readable file"),
])
def test_bad_combinations_are_refused_when_the_settings_are_read(settings: dict, complaint: str) -> None:
    with pytest.raises(ValidationError, match=complaint):
        KafkaSettings(**settings)


def test_the_connection_checks_itself_too() -> None:
    with pytest.raises(ValueError, match="security protocol"):
        KafkaConnection("h:1", "SASL")
    with pytest.raises(ValueError, match="SASL mechanism"):
        KafkaConnection("h:1", "SASL_SSL", "OAUTHBEARER", "u", "p")


def test_every_kafka_client_of_the_project_is_built_from_the_connection() -> None:
    """No module builds an aiokafka client from the bootstrap alone (it would miss TLS and SASL)."""
    root = Path(__file__).resolve().parents[3]
    offenders = []
    for folder in ("ingest", "sessionizer", "sink", "schemas", "touchstream"):
        for path in (root / folder).rglob("*.py"):
            text = path.read_text()
            if "bootstrap_servers=" in text and "devstack" not in path.parts:
                offenders.append(str(path.relative_to(root)))
    assert offenders == []
