"""Creating accounts and resolving API credentials. Services never commit."""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection

from kassa.accounts import repository
from kassa.accounts.schemas import (
    KeyPair,
    Mode,
    NewAccount,
    Principal,
    Protocol,
    ProtocolCredential,
    Tier,
)
from kassa.context import ServiceContext
from kassa.core import ids
from kassa.core.signing import hashes_match, keyed_hash, protocol_key, webhook_secret
from kassa.errors import AlreadyRotated, AuthError, ValidationError
from kassa.tasks import repository as tasks

DEMO_NAME = "Demo Marketplace"
# The seed's sandbox credentials (SPEC §1): test mode only, never valid for live.
DEMO_TEST_KEY = "zr_test_sandbox_key_123"
DEMO_TEST_SECRET = "test_secret_456"  # noqa: S105 - published sandbox credential
DEMO_TASK_ID = "test_task_123"  # the task the seed's sandbox examples pay for
DEMO_RETURN_URL = "https://your-app.com/payment/success"
# Seed 003's published test merchant (PID / KEY): the demo account's test-mode EasyPay
# credential, so the seed's examples run against the demo as printed. Never live.
DEMO_EPAY_PID = "20220726190052"
DEMO_EPAY_KEY = "vg9ZRZN4FOKtDM06UfqH69GDJoG4gGIJ"
DEMO_CRYPTOGW_KEY = "cgk_test_sandbox_key_123"
PUBLISHED_SECRET_VERSION = 0  # the secret is DEMO_EPAY_KEY, not a derived one


def _hint(api_key: str) -> str:
    return f"{api_key[:8]}…{api_key[-4:]}"


def _add_key(conn: Connection, ctx: ServiceContext, *, account_id: str, mode: str,
             api_key: str, api_secret: str) -> KeyPair:
    if not api_key.startswith(f"zr_{mode}_"):
        raise ValidationError(f"a {mode} key must start with zr_{mode}_")
    key_hash = keyed_hash(ctx.server_key, api_key)
    if repository.key_exists(conn, key_hash):
        raise ValidationError("that API key is already in use")
    repository.insert_api_key(
        conn,
        key_hash=key_hash,
        account_id=account_id,
        mode=mode,
        secret_hash=keyed_hash(ctx.server_key, api_secret),
        key_hint=_hint(api_key),
        now=ctx.clock.now(),
    )
    return KeyPair(mode=mode, api_key=api_key, api_secret=api_secret)


def create_account(conn: Connection, ctx: ServiceContext, *, name: str, tier: str,
                   test_key: str | None = None, test_secret: str | None = None) -> NewAccount:
    name = name.strip()
    if not name or len(name) > 200:
        raise ValidationError("name must be 1 to 200 characters")
    if tier not in set(Tier):
        raise ValidationError(f"tier must be one of {', '.join(Tier)}")
    account_id = ids.account_id()
    repository.insert_account(conn, account_id=account_id, name=name, tier=tier,
                              now=ctx.clock.now())
    live = _add_key(conn, ctx, account_id=account_id, mode=Mode.LIVE,
                    api_key=ids.api_key("live"), api_secret=ids.api_secret())
    test = _add_key(conn, ctx, account_id=account_id, mode=Mode.TEST,
                    api_key=test_key or ids.api_key("test"),
                    api_secret=test_secret or ids.api_secret())
    return NewAccount(
        account_id=account_id,
        name=name,
        tier=tier,
        keys=(live, test),
        webhook_secret=webhook_secret(ctx.server_key, account_id, 1),
        protocol_credentials=issue_protocol_credentials(conn, ctx, account_id=account_id),
    )


def ensure_demo_account(conn: Connection, ctx: ServiceContext) -> NewAccount | None:
    """Create the demo account with the seed's sandbox credentials, once, with the task
    its sandbox examples pay for (`test_task_123`, 5000 CNY, not yet dispatched)."""
    if repository.key_exists(conn, keyed_hash(ctx.server_key, DEMO_TEST_KEY)):
        return None
    account = create_account(conn, ctx, name=DEMO_NAME, tier=Tier.VERIFIED,
                             test_key=DEMO_TEST_KEY, test_secret=DEMO_TEST_SECRET)
    _add_protocol_credential(conn, ctx, protocol=Protocol.EPAY, account_id=account.account_id,
                             mode=Mode.TEST, public_id=DEMO_EPAY_PID,
                             version=PUBLISHED_SECRET_VERSION)
    _add_protocol_credential(conn, ctx, protocol=Protocol.CRYPTOGW,
                             account_id=account.account_id, mode=Mode.TEST,
                             public_id=DEMO_CRYPTOGW_KEY)
    now = ctx.clock.now()
    tasks.insert_task(conn, {
        "account_id": account.account_id, "mode": Mode.TEST, "task_id": DEMO_TASK_ID,
        "title": "Sandbox example task", "amount": 5000, "currency": "CNY",
        "payment_method": None, "return_url": DEMO_RETURN_URL, "callback_url": None,
        "metadata_json": None, "status": "open", "current_order_id": None,
        "created_at": now, "updated_at": now,
    })
    return account


def demo_account_credentials(conn: Connection, ctx: ServiceContext) -> tuple[str, str] | None:
    """(account_id, webhook secret) of the demo account, if it exists."""
    row = repository.find_active_key(conn, keyed_hash(ctx.server_key, DEMO_TEST_KEY),
                                     ctx.clock.now())
    if row is None:
        return None
    account = repository.get_account(conn, row.account_id)
    assert account is not None
    return row.account_id, webhook_secret(ctx.server_key, row.account_id,
                                          account.webhook_secret_version)


def resolve_key(conn: Connection, ctx: ServiceContext, api_key: str) -> Principal | None:
    """The principal behind an API key (secret not checked here), or None."""
    row = repository.find_active_key(conn, keyed_hash(ctx.server_key, api_key),
                                     ctx.clock.now())
    if row is None:
        return None
    return Principal(account_id=row.account_id, mode=row.mode, tier=row.tier, name=row.name,
                     secret_hash=row.secret_hash, key_expires_at=row.revoked_at)


def check_secret(ctx: ServiceContext, principal: Principal, api_secret: str) -> None:
    if not hashes_match(keyed_hash(ctx.server_key, api_secret), principal.secret_hash):
        raise AuthError("Invalid API key or secret")


# Grace periods a rotated key may keep working for (the console offers these).
MAX_KEY_GRACE_SECONDS = 7 * 24 * 3600


def key_generation(conn: Connection, *, principal: Principal) -> int:
    """Changes with every rotation of the principal's mode: a rotation form carries it, so
    that the same form sent twice rotates once."""
    return repository.key_count(conn, account_id=principal.account_id, mode=principal.mode)


def key_hints(conn: Connection, ctx: ServiceContext, *, principal: Principal
              ) -> list[dict[str, Any]]:
    """The usable keys of the principal's account and mode, as hints (never the keys):
    [{"hint", "created_at", "expires_at" (None, or when a rotated key stops)}]."""
    rows = repository.active_keys(conn, account_id=principal.account_id, mode=principal.mode,
                                  now=ctx.clock.now())
    return [{"hint": r.key_hint, "created_at": r.created_at, "expires_at": r.revoked_at}
            for r in rows]


def rotate_api_key(conn: Connection, ctx: ServiceContext, *, principal: Principal,
                   grace_seconds: int, generation: int | None = None) -> KeyPair:
    """A new key and secret for the principal's mode, shown once. The keys in use stop
    working after `grace_seconds` (0: at once), so an integration can switch over.
    Processes that cached a key's lookup may take it for auth_cache_seconds more. With
    `generation` (key_generation as the caller saw it), a rotation since is AlreadyRotated."""
    if not 0 <= grace_seconds <= MAX_KEY_GRACE_SECONDS:
        raise ValidationError(f"the grace period is 0 to {MAX_KEY_GRACE_SECONDS} seconds")
    repository.lock_account(conn, principal.account_id)  # concurrent rotations in turn
    demo = repository.find_active_key(conn, keyed_hash(ctx.server_key, DEMO_TEST_KEY), now=None)
    if demo is not None and (demo.account_id, demo.mode) == (principal.account_id,
                                                             principal.mode):
        raise ValidationError("The demo account's sandbox key is published (anyone may use "
                              "it) and cannot be rotated; create an account of your own "
                              "with `kassa accounts create`")
    if generation is not None and generation != key_generation(conn, principal=principal):
        raise AlreadyRotated("The API key has been rotated since this form was shown; "
                             "nothing was rotated again")
    now = ctx.clock.now()
    repository.revoke_keys(conn, account_id=principal.account_id, mode=principal.mode,
                           at=now + timedelta(seconds=grace_seconds))
    return _add_key(conn, ctx, account_id=principal.account_id, mode=principal.mode,
                    api_key=ids.api_key(principal.mode), api_secret=ids.api_secret())


# --- protocol facade credentials (SPEC §1, §9) -------------------------------------------------

def protocol_secret(ctx: ServiceContext, *, protocol: str, account_id: str, mode: str,
                    version: int) -> str:
    """The EasyPay KEY or crypto-gateway secret of a credential: derived, never stored."""
    if version == PUBLISHED_SECRET_VERSION:
        if protocol != Protocol.EPAY or mode != Mode.TEST:
            raise ValueError("the published sandbox KEY is for test-mode EasyPay only")
        return DEMO_EPAY_KEY
    return protocol_key(ctx.server_key, protocol, account_id, mode, version)


def _lookup(ctx: ServiceContext, protocol: str, public_id: str) -> str:
    """What a credential is found by: the PID itself (it is public, in every EasyPay URL),
    or the keyed hash of a crypto-gateway API key."""
    return public_id if protocol == Protocol.EPAY else keyed_hash(ctx.server_key, public_id)


def _add_protocol_credential(conn: Connection, ctx: ServiceContext, *, protocol: str,
                             account_id: str, mode: str, public_id: str, version: int = 1
                             ) -> ProtocolCredential:
    lookup = _lookup(ctx, protocol, public_id)
    if repository.find_facade_credential(conn, protocol=protocol, lookup=lookup) is not None:
        raise ValidationError(f"that {protocol} credential is already in use")
    repository.insert_facade_credential(conn, {
        "protocol": protocol, "lookup": lookup, "account_id": account_id, "mode": mode,
        "secret_version": version, "hint": public_id if protocol == Protocol.EPAY
        else _hint(public_id), "created_at": ctx.clock.now()})
    return ProtocolCredential(protocol=protocol, mode=mode, id=public_id,
                              secret=protocol_secret(ctx, protocol=protocol,
                                                     account_id=account_id, mode=mode,
                                                     version=version))


def _new_public_id(protocol: str, mode: str) -> str:
    if protocol == Protocol.EPAY:  # EasyPay PIDs are digits (some clients send them as ints)
        return str(10**15 + secrets.randbelow(9 * 10**15))
    return f"cgk_{mode}_{secrets.token_hex(16)}"


def issue_protocol_credentials(conn: Connection, ctx: ServiceContext, *, account_id: str
                               ) -> tuple[ProtocolCredential, ...]:
    """An EasyPay PID/KEY and a crypto-gateway key/secret for each mode the account has no
    credential of yet (new accounts, and accounts made before the facades existed)."""
    have = {(r.protocol, r.mode) for r in repository.facade_credentials_of(conn, account_id)}
    return tuple(
        _add_protocol_credential(conn, ctx, protocol=protocol, account_id=account_id,
                                 mode=mode, public_id=_new_public_id(protocol, mode))
        for protocol in Protocol for mode in (Mode.LIVE, Mode.TEST)
        if (protocol, mode) not in have)


def rotate_protocol_secrets(conn: Connection, ctx: ServiceContext, *, account_id: str
                            ) -> tuple[ProtocolCredential, ...]:
    """New KEYs and secrets for the account's credentials (PIDs and API keys stay; the
    published sandbox KEY of the demo is replaced too)."""
    rotated = []
    for row in repository.facade_credentials_of(conn, account_id):
        version = repository.bump_facade_secret(conn, protocol=row.protocol, lookup=row.lookup)
        rotated.append(ProtocolCredential(
            protocol=row.protocol, mode=row.mode, id=row.hint,
            secret=protocol_secret(ctx, protocol=row.protocol, account_id=account_id,
                                   mode=row.mode, version=version)))
    return tuple(rotated)


def resolve_protocol_credential(conn: Connection, ctx: ServiceContext, *, protocol: str,
                                public_id: str) -> tuple[Principal, str, str] | None:
    """(principal, KEY or secret, lookup) of a PID or crypto-gateway API key, or None."""
    if not public_id or len(public_id) > 200:
        return None
    lookup = _lookup(ctx, protocol, public_id)
    row = repository.find_facade_credential(conn, protocol=protocol, lookup=lookup)
    if row is None:
        return None
    principal = Principal(account_id=row["account_id"], mode=row["mode"], tier=row["tier"],
                          name=row["name"], secret_hash="")
    return principal, protocol_secret(ctx, protocol=protocol, account_id=row["account_id"],
                                      mode=row["mode"], version=row["secret_version"]), lookup


def credential_secret(conn: Connection, ctx: ServiceContext, *, protocol: str, lookup: str,
                      ) -> tuple[str, str] | None:
    """(public id as shown, current secret) of a credential by its lookup (notifications
    are signed with the current KEY of the credential an order came with)."""
    row = repository.find_facade_credential(conn, protocol=protocol, lookup=lookup)
    if row is None:
        return None
    return row["lookup"], protocol_secret(ctx, protocol=protocol,
                                          account_id=row["account_id"], mode=row["mode"],
                                          version=row["secret_version"])
