"""API keys: configured as sha256 digests with scopes, checked in constant time.

A key entry is `name:sha256hex:scope[,scope...]`. The server never sees a key
in its configuration, only its digest; a leaked config file or environment
therefore does not leak a usable key. Keys are long random strings, so an
unsalted sha256 is enough (there is nothing to brute-force in a 256-bit token).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from service.security.policy import SCOPES

KEY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
HEX_DIGEST = re.compile(r"^[0-9a-f]{64}$")
KEY_PREFIX = "jepa_"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    """A fresh random key: 256 bits, URL-safe, with a prefix that secret scanners can match."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class ApiKey:
    name: str
    digest: bytes
    scopes: frozenset[str]

    def __repr__(self) -> str:  # the digest stays out of logs and tracebacks
        return f"ApiKey(name={self.name!r}, scopes={sorted(self.scopes)})"

    @classmethod
    def parse(cls, entry: str) -> ApiKey:
        parts = entry.strip().split(":")
        if len(parts) != 3:
            raise ValueError("an API key entry is 'name:sha256hex:scopes'")
        name, digest, scopes = (p.strip() for p in parts)
        if not KEY_NAME.match(name):
            raise ValueError(f"API key name {name[:64]!r}: 1-64 letters, digits, '_', '-', '.'")
        if not HEX_DIGEST.match(digest.lower()):
            raise ValueError(
                f"API key {name!r}: the second field must be the 64-hex-digit sha256 of the key, not the key"
            )
        wanted = frozenset(s.strip() for s in scopes.split(",") if s.strip())
        unknown = wanted - SCOPES
        if not wanted or unknown:
            raise ValueError(f"API key {name!r}: scopes must be some of {sorted(SCOPES)}; got {scopes!r}")
        return cls(name=name, digest=bytes.fromhex(digest.lower()), scopes=wanted)


def _entries(text: str) -> Iterable[str]:
    for line in re.split(r"[;\n]", text):
        line = line.split("#", 1)[0].strip()
        if line:
            yield line


class KeyRing:
    """The configured keys. Empty = auth off."""

    def __init__(self, keys: Iterable[ApiKey]) -> None:
        self._keys = list(keys)
        names = [k.name for k in self._keys]
        if len(set(names)) != len(names):
            raise ValueError("API key names must be unique (they name the rate-limit bucket and the log field)")
        if len({k.digest for k in self._keys}) != len(self._keys):
            raise ValueError("the same API key is configured twice")

    @classmethod
    def from_config(cls, inline: str, file: Path | None) -> KeyRing:
        text = inline
        if file is not None:
            try:
                text += "\n" + file.read_text()
            except OSError as exc:
                raise ValueError(f"cannot read the API keys file {file}: {exc.strerror}") from exc
        return cls(ApiKey.parse(e) for e in _entries(text))

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def verify(self, presented: str) -> ApiKey | None:
        """The key whose digest equals sha256(presented), compared against every key in constant time.

        Every configured digest is compared (no early exit), so the time taken
        says nothing about which key, or how much of one, matched.
        """
        digest = hashlib.sha256(presented.encode()).digest()
        found: ApiKey | None = None
        for key in self._keys:
            if hmac.compare_digest(digest, key.digest):
                found = key
        return found
