"""Which channel serves a payment method in each mode."""

from __future__ import annotations

from dataclasses import dataclass, field

from kassa.channels.base import Channel
from kassa.channels.sandbox import SandboxChannel
from kassa.config import Settings


@dataclass
class ChannelRegistry:
    sandbox: Channel
    # Live upstreams by payment method; none are configured until an operator adds them.
    live: dict[str, Channel] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Settings) -> ChannelRegistry:
        return cls(sandbox=SandboxChannel(settings.sandbox_settle_seconds,
                                           settings.sandbox_refund_seconds))

    def for_method(self, *, mode: str, payment_method: str) -> Channel | None:
        if mode == "test":
            return self.sandbox if payment_method in self.sandbox.methods else None
        return self.live.get(payment_method)
