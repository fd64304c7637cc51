"""Which channel serves a payment method in each mode: test mode always the sandbox; live
mode the upstreams the operator configured (SPEC §8), and manual bank transfer."""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx

from kassa.channels.bank_transfer import ManualTransferChannel
from kassa.channels.base import Channel, Upstream, is_upstream
from kassa.channels.cryptogw import CryptoGatewayUpstream
from kassa.channels.epay import EpayUpstream
from kassa.channels.sandbox import SandboxChannel
from kassa.config import Settings


@dataclass
class ChannelRegistry:
    sandbox: Channel
    # Live channels by payment method: in-process ones (bank transfer) and upstreams.
    live: dict[str, Channel | Upstream] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Settings) -> ChannelRegistry:
        registry = cls(sandbox=SandboxChannel(settings.sandbox_settle_seconds,
                                              settings.sandbox_refund_seconds))
        registry.live["bank_transfer"] = ManualTransferChannel()
        for upstream in upstreams_from_settings(settings):
            for method in upstream.methods:
                registry.live[method] = upstream
        return registry

    def for_method(self, *, mode: str, payment_method: str) -> Channel | Upstream | None:
        if mode == "test":
            return self.sandbox if payment_method in self.sandbox.methods else None
        return self.live.get(payment_method)

    def upstream(self, name: str) -> Upstream | None:
        """A configured upstream by name (epay, cryptogw): notifications and jobs name it."""
        for channel in self.live.values():
            if is_upstream(channel) and channel.name == name:
                return channel
        return None

    def upstreams(self) -> list[Upstream]:
        seen: dict[str, Upstream] = {}
        for channel in self.live.values():
            if is_upstream(channel):
                seen.setdefault(channel.name, channel)
        return list(seen.values())


def upstreams_from_settings(settings: Settings) -> list[Upstream]:
    """The configured upstreams, sharing one HTTP client (connection pool)."""
    client = httpx.AsyncClient(timeout=settings.upstream_timeout_seconds,
                               follow_redirects=False)
    found: list[Upstream] = []
    if settings.epay_upstream_url and settings.epay_upstream_pid and settings.epay_upstream_key:
        found.append(EpayUpstream(
            base_url=settings.epay_upstream_url.rstrip("/"), pid=settings.epay_upstream_pid,
            key=settings.epay_upstream_key.get_secret_value(),
            methods=frozenset(settings.epay_upstream_methods),
            use_mapi=settings.epay_upstream_mapi, client=client))
    if (settings.cryptogw_upstream_url and settings.cryptogw_upstream_api_key
            and settings.cryptogw_upstream_secret):
        found.append(CryptoGatewayUpstream(
            base_url=settings.cryptogw_upstream_url.rstrip("/"),
            api_key=settings.cryptogw_upstream_api_key.get_secret_value(),
            secret=settings.cryptogw_upstream_secret.get_secret_value(), client=client,
            max_skew_seconds=settings.cryptogw_max_skew_seconds))
    return found
