"""How a client reaches the brokers: the one place that turns the Kafka settings' connection part
(`schemas.settings.KafkaSettings`: protocol, SASL, certificate files) into aiokafka's and
Faust's arguments.

Every Kafka client of the project is built from a `KafkaConnection`: the edge's publisher, the
sessionizer (Faust's consumer and producer, its own output producer and admin client), the
sink's consumer, the topic commands, `forget`, the tests and the benches. So a deployment
switches to TLS or SASL with settings alone, and a component that forgot the credentials does
not exist.

    PLAINTEXT        no TLS, no authentication (loopback, development)
    SSL              TLS; a client certificate when the brokers require one (mutual TLS)
    SASL_PLAINTEXT   SASL without TLS (the password crosses the network in the clear with PLAIN)
    SASL_SSL         SASL over TLS: what managed Kafka services ask for

The SSL context is built once per set of files and reused (every client of a process shares
it): the CA file (or the system's CAs), hostname checking, and the client certificate and key,
whose password is only ever passed to `ssl`. Passwords are kept out of `repr` and, by
`schemas.logs`, out of every log line.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from schemas.settings import KafkaSettings

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


@dataclass(frozen=True, slots=True)
class KafkaConnection:
    """Brokers and how to talk to them. `client_args()` for aiokafka, `faust_credentials()` for Faust."""

    bootstrap: str
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "SCRAM-SHA-512"
    sasl_username: str = ""
    sasl_password: str = field(default="", repr=False)
    cafile: Path | None = None
    certfile: Path | None = None
    keyfile: Path | None = None
    key_password: str = field(default="", repr=False)
    check_hostname: bool = True

    def __post_init__(self) -> None:
        if self.security_protocol not in PROTOCOLS:
            raise ValueError(f"security protocol {self.security_protocol!r} is not one of {', '.join(PROTOCOLS)}")
        if self.sasl and self.sasl_mechanism not in MECHANISMS:
            raise ValueError(f"SASL mechanism {self.sasl_mechanism!r} is not one of {', '.join(MECHANISMS)}")

    @classmethod
    def of(cls, source: str | KafkaSettings | KafkaConnection) -> KafkaConnection:
        """A connection from settings, or a bare bootstrap string (PLAINTEXT), or itself."""
        if isinstance(source, KafkaConnection):
            return source
        if isinstance(source, str):
            return cls(source)
        return cls(
            bootstrap=source.kafka_bootstrap,
            security_protocol=source.kafka_security_protocol,
            sasl_mechanism=source.kafka_sasl_mechanism,
            sasl_username=source.kafka_sasl_username,
            sasl_password=source.kafka_sasl_password.get_secret_value(),
            cafile=source.kafka_ssl_cafile,
            certfile=source.kafka_ssl_certfile,
            keyfile=source.kafka_ssl_keyfile,
            key_password=source.kafka_ssl_key_password.get_secret_value(),
            check_hostname=source.kafka_ssl_check_hostname,
        )

    @property
    def tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    @property
    def sasl(self) -> bool:
        return self.security_protocol.startswith("SASL_")

    @property
    def hosts(self) -> list[str]:
        return [h.strip() for h in self.bootstrap.split(",") if h.strip()]

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context of the TLS protocols (None otherwise), shared by every client."""
        if not self.tls:
            return None
        return _context(self.cafile, self.certfile, self.keyfile, self.key_password, self.check_hostname)

    def security_args(self) -> dict[str, Any]:
        """aiokafka's security arguments (AIOKafkaProducer/Consumer/AdminClient take the same)."""
        args: dict[str, Any] = {"security_protocol": self.security_protocol}
        if self.tls:
            args["ssl_context"] = self.ssl_context()
        if self.sasl:
            args.update(sasl_mechanism=self.sasl_mechanism, sasl_plain_username=self.sasl_username,
                        sasl_plain_password=self.sasl_password)
        return args

    def client_args(self) -> dict[str, Any]:
        """`bootstrap_servers` and the security arguments: `AIOKafkaProducer(**conn.client_args(), ...)`."""
        return {"bootstrap_servers": self.bootstrap, **self.security_args()}

    def faust_credentials(self) -> Any:
        """`faust.App(broker_credentials=...)`: None for PLAINTEXT. Faust hands them to every
        consumer, producer and admin client it makes (`credentials_to_aiokafka_auth`)."""
        from faust.auth import SASLCredentials, SSLCredentials

        if self.sasl:
            # Faust derives SASL_SSL from the presence of the context, SASL_PLAINTEXT from its absence.
            return SASLCredentials(username=self.sasl_username, password=self.sasl_password,
                                   ssl_context=self.ssl_context(), mechanism=self.sasl_mechanism)
        if self.tls:
            return SSLCredentials(self.ssl_context())
        return None


@lru_cache(maxsize=8)
def _context(cafile: Path | None, certfile: Path | None, keyfile: Path | None, key_password: str,
             check_hostname: bool) -> ssl.SSLContext:
    # verify_mode stays CERT_REQUIRED even without hostname checks: the brokers' certificates
    # are always checked against the CA.
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cafile) if cafile else None)
    context.check_hostname = check_hostname
    if certfile is not None:
        context.load_cert_chain(str(certfile), str(keyfile) if keyfile else None, key_password or None)
    return context
