"""The dashboard's login: one password (or its scrypt hash) from the settings, and a signed,
HttpOnly, SameSite=Strict cookie that lasts `dashboard_session_hours`.

The cookie holds only its expiry and a nonce, signed with HMAC-SHA256 under the secret key; a new
random key per start (the default) logs everyone out on restart. No server-side state.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from dashboard.settings import DashboardSettings

COOKIE = "touchstream_dashboard"
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """`scrypt$N$r$p$salt$hash`, for TOUCHSTREAM_DASHBOARD_PASSWORD_HASH."""
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_hash(password: str, encoded: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = encoded.split("$")
        if scheme != "scrypt":
            return False
        got = hashlib.scrypt(password.encode(), salt=_unb64(salt), n=int(n), r=int(r), p=int(p),
                             dklen=len(_unb64(digest)), maxmem=2**26)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, _unb64(digest))


@dataclass
class Gate:
    """Checks passwords and issues / checks the login cookie."""

    settings: DashboardSettings
    key: bytes

    @classmethod
    def from_settings(cls, settings: DashboardSettings) -> Gate:
        secret = settings.dashboard_secret_key.get_secret_value()
        return cls(settings, secret.encode() if secret else secrets.token_bytes(32))

    @property
    def required(self) -> bool:
        return self.settings.login_required

    def check_password(self, password: str) -> bool:
        encoded = self.settings.dashboard_password_hash.get_secret_value()
        if encoded:
            return verify_hash(password, encoded)
        expected = self.settings.dashboard_password.get_secret_value()
        return bool(expected) and hmac.compare_digest(password.encode(), expected.encode())

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self.key, payload.encode(), hashlib.sha256).digest())

    def issue(self, now: float | None = None) -> str:
        expires = int((now or time.time()) + self.settings.dashboard_session_hours * 3600)
        payload = f"{expires}.{secrets.token_urlsafe(12)}"
        return f"{payload}.{self._sign(payload)}"

    def valid(self, cookie: str | None, now: float | None = None) -> bool:
        if not cookie or cookie.count(".") != 2:
            return False
        payload, signature = cookie.rsplit(".", 1)
        if not hmac.compare_digest(signature, self._sign(payload)):
            return False
        try:
            return int(payload.split(".", 1)[0]) > (now or time.time())
        except ValueError:
            return False

    def cookie_header(self, value: str, *, max_age: int | None = None) -> str:
        age = int(self.settings.dashboard_session_hours * 3600) if max_age is None else max_age
        secure = "; Secure" if self.settings.dashboard_cookie_secure else ""
        return f"{COOKIE}={value}; Path=/; Max-Age={age}; HttpOnly; SameSite=Strict{secure}"
