"""Creating accounts and resolving API credentials. Services never commit."""

from __future__ import annotations

from sqlalchemy import Connection

from kassa.accounts import repository
from kassa.accounts.schemas import KeyPair, Mode, NewAccount, Principal, Tier
from kassa.context import ServiceContext
from kassa.core import ids
from kassa.core.signing import hashes_match, keyed_hash, webhook_secret
from kassa.errors import AuthError, ValidationError
from kassa.tasks import repository as tasks

DEMO_NAME = "Demo Marketplace"
# The seed's sandbox credentials (SPEC §1): test mode only, never valid for live.
DEMO_TEST_KEY = "zr_test_sandbox_key_123"
DEMO_TEST_SECRET = "test_secret_456"  # noqa: S105 - published sandbox credential
DEMO_TASK_ID = "test_task_123"  # the task the seed's sandbox examples pay for
DEMO_RETURN_URL = "https://your-app.com/payment/success"


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
    )


def ensure_demo_account(conn: Connection, ctx: ServiceContext) -> NewAccount | None:
    """Create the demo account with the seed's sandbox credentials, once, with the task
    its sandbox examples pay for (`test_task_123`, 5000 CNY, not yet dispatched)."""
    if repository.key_exists(conn, keyed_hash(ctx.server_key, DEMO_TEST_KEY)):
        return None
    account = create_account(conn, ctx, name=DEMO_NAME, tier=Tier.VERIFIED,
                             test_key=DEMO_TEST_KEY, test_secret=DEMO_TEST_SECRET)
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
    row = repository.find_active_key(conn, keyed_hash(ctx.server_key, DEMO_TEST_KEY))
    if row is None:
        return None
    account = repository.get_account(conn, row.account_id)
    assert account is not None
    return row.account_id, webhook_secret(ctx.server_key, row.account_id,
                                          account.webhook_secret_version)


def resolve_key(conn: Connection, ctx: ServiceContext, api_key: str) -> Principal | None:
    """The principal behind an API key (secret not checked here), or None."""
    row = repository.find_active_key(conn, keyed_hash(ctx.server_key, api_key))
    if row is None:
        return None
    return Principal(account_id=row.account_id, mode=row.mode, tier=row.tier, name=row.name,
                     secret_hash=row.secret_hash)


def check_secret(ctx: ServiceContext, principal: Principal, api_secret: str) -> None:
    if not hashes_match(keyed_hash(ctx.server_key, api_secret), principal.secret_hash):
        raise AuthError("Invalid API key or secret")
