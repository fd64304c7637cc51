from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Tier(StrEnum):
    STANDARD = "standard"
    VERIFIED = "verified"
    ENTERPRISE = "enterprise"


class Mode(StrEnum):
    LIVE = "live"
    TEST = "test"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the account behind an API key, and the key's mode."""

    account_id: str
    mode: str
    tier: str
    name: str
    secret_hash: str

    @property
    def live(self) -> bool:
        return self.mode == Mode.LIVE


@dataclass(frozen=True, slots=True)
class KeyPair:
    mode: str
    api_key: str
    api_secret: str


@dataclass(frozen=True, slots=True)
class NewAccount:
    """Credentials as created: shown once, never stored in the clear."""

    account_id: str
    name: str
    tier: str
    keys: tuple[KeyPair, ...]
    webhook_secret: str
