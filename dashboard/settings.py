"""The dashboard's settings: `TOUCHSTREAM_*` environment variables, read once in `__main__`."""

from __future__ import annotations

import ipaddress

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from schemas.settings import ENV_PREFIX, LogSettings, PostgresSettings
from sink.settings import _identifier


class DashboardSettings(PostgresSettings, LogSettings):
    """Where the dashboard listens, how it reaches PostgreSQL (as the analyst role), its login, and
    how it logs (schemas.logs)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    dashboard_host: str = Field("127.0.0.1", description="address the dashboard listens on; any other than "
                                "loopback requires a login (TOUCHSTREAM_DASHBOARD_PASSWORD or _PASSWORD_HASH)")
    dashboard_port: int = Field(8050, ge=0, le=65535, description="port the dashboard listens on (0: any free port)")
    dashboard_pg_dsn: str | None = Field(
        None, description="DSN of the dashboard's read-only login (unset: TOUCHSTREAM_PG_DSN)")
    pg_analyst_role: str = Field("touchstream_analyst", description="read-only role created by the migrations")
    dashboard_set_role: bool = Field(
        True, description="SET ROLE to pg_analyst_role after connecting (off: read as the login of the DSN)")
    dashboard_password: SecretStr = Field(SecretStr(""), description="the login's password (prefer _PASSWORD_HASH)")
    dashboard_password_hash: SecretStr = Field(
        SecretStr(""), description="scrypt hash of the login's password (`touchstream dashboard --hash-password`)")
    dashboard_secret_key: SecretStr = Field(
        SecretStr(""), description="key that signs login cookies (unset: a new random key each start)")
    dashboard_cookie_secure: bool = Field(False, description="mark the login cookie Secure (serve it over HTTPS)")
    dashboard_session_hours: float = Field(12.0, gt=0, description="how long a login lasts")
    dashboard_pool_size: int = Field(4, ge=1, description="PostgreSQL connections of the dashboard")
    dashboard_statement_timeout_ms: int = Field(
        15000, ge=100, description="longest a dashboard query may run before it is cancelled")

    @field_validator("pg_schema", "pg_analyst_role")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        return _identifier(value)

    @property
    def read_dsn(self) -> str:
        return self.dashboard_pg_dsn or self.pg_dsn

    @property
    def loopback(self) -> bool:
        if self.dashboard_host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.dashboard_host).is_loopback
        except ValueError:
            return False

    @property
    def login_required(self) -> bool:
        """A login protects every page and endpoint when one is set, and always off loopback."""
        has_secret = bool(self.dashboard_password.get_secret_value() or self.dashboard_password_hash.get_secret_value())
        return has_secret or not self.loopback

    @model_validator(mode="after")
    def _login_off_loopback(self) -> DashboardSettings:
        if not self.loopback and not (self.dashboard_password.get_secret_value()
                                      or self.dashboard_password_hash.get_secret_value()):
            raise ValueError(f"the dashboard binds {self.dashboard_host}, which is not loopback: set "
                             "TOUCHSTREAM_DASHBOARD_PASSWORD_HASH (or _PASSWORD) so it asks for a login")
        return self
