"""The stack's TLS material and generated passwords, made locally with openssl (`up --tls`).

    .stack/tls/
      ca.pem, ca.key               a private CA (EC P-256), trusted by the clients' settings
      broker.p12                   every broker's key and certificate (localhost, 127.0.0.1), PKCS#12
      client.pem, client.key       a client certificate for the SSL listener; the key is encrypted
      postgres.crt, postgres.key   PostgreSQL's certificate: names `localhost` only, so that
                                   `sslmode=verify-full` against 127.0.0.1 fails (the tests rely on it)
      *.password                   generated secrets: keystore, client-key, sasl, pg-owner, pg-writer,
                                   pg-analyst

Everything is mode 0600 and made once (kept across `up`/`down`, deleted by `down --wipe`).
Passwords reach openssl through files (`pass:` arguments would show in `ps`), and the commands
that print settings print `$(cat .stack/tls/NAME.password)` instead of a secret.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .process import StackError

SECRETS = ("keystore", "client-key", "sasl", "pg-owner", "pg-writer", "pg-analyst")
SASL_USER = "touchstream"
# PostgreSQL logins the stack creates with --tls (each holds one role; SPEC section 7).
PG_OWNER, PG_WRITER, PG_ANALYST = "touchstream_owner", "touchstream_sink", "touchstream_reader"
_CURVE = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
_DAYS = "825"


def _openssl() -> str:
    found = shutil.which("openssl")
    if not found:
        raise StackError("openssl is missing (it makes the stack's certificates): apt-get install openssl")
    return found


def _run(args: list[str], what: str) -> None:
    result = subprocess.run([_openssl(), *args], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise StackError(f"openssl {what} failed (exit {result.returncode}):\n{result.stderr[-2000:]}")


def _private(path: Path) -> None:
    os.chmod(path, 0o600)


@dataclass(frozen=True)
class TlsMaterial:
    dir: Path

    @property
    def ca_cert(self) -> Path:
        return self.dir / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.dir / "ca.key"

    @property
    def broker_keystore(self) -> Path:
        return self.dir / "broker.p12"

    @property
    def client_cert(self) -> Path:
        return self.dir / "client.pem"

    @property
    def client_key(self) -> Path:
        return self.dir / "client.key"

    @property
    def pg_cert(self) -> Path:
        return self.dir / "postgres.crt"

    @property
    def pg_key(self) -> Path:
        return self.dir / "postgres.key"

    def secret_file(self, name: str) -> Path:
        if name not in SECRETS:
            raise KeyError(name)
        return self.dir / f"{name}.password"

    def secret(self, name: str) -> str:
        """A generated password (made on first use): hex, so it needs no quoting in URLs or configs."""
        path = self.secret_file(name)
        if not path.is_file():
            self.dir.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_hex(16) + "\n")
            _private(path)
        return path.read_text().strip()

    # --- certificates -------------------------------------------------------------------

    def ensure(self) -> bool:
        """Make whatever is missing; True if anything was made. A new CA re-issues every certificate."""
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        made = False
        if not (self.ca_cert.is_file() and self.ca_key.is_file()):
            for path in (self.broker_keystore, self.client_cert, self.pg_cert):
                path.unlink(missing_ok=True)
            _run(["req", "-x509", *_CURVE, "-nodes", "-keyout", str(self.ca_key), "-out", str(self.ca_cert),
                  "-days", "3650", "-subj", "/CN=Touchstream dev stack CA",
                  "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
                 "CA")
            _private(self.ca_key)
            made = True
        if not self.broker_keystore.is_file():
            self._broker()
            made = True
        if not (self.client_cert.is_file() and self.client_key.is_file()):
            self._client()
            made = True
        if not (self.pg_cert.is_file() and self.pg_key.is_file()):
            self._leaf("postgres", "DNS:localhost", "serverAuth", self.pg_cert, self.pg_key)
            made = True
        return made

    def _leaf(self, name: str, san: str, usage: str, cert: Path, key: Path) -> None:
        """A key and a certificate signed by the CA, naming `san`."""
        csr, ext = self.dir / f"{name}.csr", self.dir / f"{name}.ext"
        ext.write_text(f"subjectAltName={san}\nextendedKeyUsage={usage}\nbasicConstraints=CA:FALSE\n")
        try:
            _run(["req", "-new", *_CURVE, "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}"],
                 f"{name} key")
            _private(key)
            _run(["x509", "-req", "-in", str(csr), "-CA", str(self.ca_cert), "-CAkey", str(self.ca_key),
                  "-set_serial", str(int.from_bytes(os.urandom(8), "big")), "-days", _DAYS, "-extfile", str(ext),
                  "-out", str(cert)], f"{name} certificate")
        finally:
            csr.unlink(missing_ok=True)
            ext.unlink(missing_ok=True)

    def _broker(self) -> None:
        cert, key = self.dir / "broker.pem", self.dir / "broker.key"
        self._leaf("broker", "DNS:localhost,IP:127.0.0.1", "serverAuth", cert, key)
        self.secret("keystore")
        try:
            _run(["pkcs12", "-export", "-in", str(cert), "-inkey", str(key), "-certfile", str(self.ca_cert),
                  "-name", "broker", "-out", str(self.broker_keystore),
                  "-passout", f"file:{self.secret_file('keystore')}"], "broker keystore")
            _private(self.broker_keystore)
        finally:
            key.unlink(missing_ok=True)
            cert.unlink(missing_ok=True)

    def _client(self) -> None:
        plain = self.dir / "client.plain.key"
        self._leaf("touchstream-client", "DNS:touchstream-client", "clientAuth", self.client_cert, plain)
        self.secret("client-key")
        try:
            _run(["pkcs8", "-topk8", "-v2", "aes-256-cbc", "-in", str(plain), "-out", str(self.client_key),
                  "-passout", f"file:{self.secret_file('client-key')}"], "client key encryption")
            _private(self.client_key)
        finally:
            plain.unlink(missing_ok=True)


def material(root: Path) -> TlsMaterial:
    return TlsMaterial(root / "tls")


def client_settings(root: Path, kafka_sasl_bootstrap: str, pg_port: int, database: str, *,
                    reveal: bool) -> dict[str, str]:
    """The settings of a client of a `--tls` stack: SASL_SSL (SCRAM-SHA-512) to Kafka, and one DSN
    per login with `sslmode=verify-full`. With `reveal=False` each secret is written as
    `$(cat FILE)`, for the export lines a shell evaluates (nothing prints a password)."""
    m = material(root)

    def secret(name: str) -> str:
        return m.secret(name) if reveal else f"$(cat {m.secret_file(name)})"

    def dsn(login: str, name: str) -> str:
        # `localhost`: the name PostgreSQL's certificate carries (verify-full checks it).
        return (f"postgresql://{login}:{secret(name)}@localhost:{pg_port}/{database}"
                f"?sslmode=verify-full&sslrootcert={m.ca_cert}")

    return {
        "TOUCHSTREAM_KAFKA_BOOTSTRAP": kafka_sasl_bootstrap,
        "TOUCHSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "TOUCHSTREAM_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "TOUCHSTREAM_KAFKA_SASL_USERNAME": SASL_USER,
        "TOUCHSTREAM_KAFKA_SASL_PASSWORD": secret("sasl"),
        "TOUCHSTREAM_KAFKA_SSL_CAFILE": str(m.ca_cert),
        # The default DSN is the least privileged one.
        "TOUCHSTREAM_PG_DSN": dsn(PG_ANALYST, "pg-analyst"),
        "TOUCHSTREAM_PG_MIGRATE_DSN": dsn(PG_OWNER, "pg-owner"),
        "TOUCHSTREAM_PG_WRITER_DSN": dsn(PG_WRITER, "pg-writer"),
        "TOUCHSTREAM_PG_ANALYST_DSN": dsn(PG_ANALYST, "pg-analyst"),
    }
