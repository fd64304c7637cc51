"""What every unit of work may need besides its connection: settings, clock, keys, channels."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from kassa.channels.registry import ChannelRegistry
from kassa.config import Settings
from kassa.core.clock import Clock
from kassa.webhooks.ssrf import Resolver, SystemResolver


@dataclass
class ServiceContext:
    settings: Settings
    server_key: bytes
    channels: ChannelRegistry
    clock: Clock = field(default_factory=Clock)
    # DNS for webhook targets, one per process's context (tests play DNS here).
    resolver: Resolver = field(default_factory=SystemResolver)

    @property
    def public_url(self) -> str:
        return self.settings.resolved_public_url

    def fx_rate(self, currency: str) -> Decimal:
        """CNY per unit of `currency` (the static table by default)."""
        if currency == "CNY":
            return Decimal(1)
        return self.settings.fx_rates[currency]


def build_context(settings: Settings) -> ServiceContext:
    return ServiceContext(
        settings=settings,
        server_key=settings.server_key(),
        channels=ChannelRegistry.from_settings(settings),
    )
