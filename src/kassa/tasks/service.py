"""Task rules (SPEC §4): create a task and, when dispatched, its payment order."""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import Connection

from kassa.accounts.schemas import Principal
from kassa.context import ServiceContext
from kassa.core import ids
from kassa.errors import DuplicateTask, TaskNotFound, ValidationError
from kassa.payments import service as payments
from kassa.payments.schemas import CreatePaymentRequest
from kassa.tasks import repository
from kassa.tasks.schemas import CreateTaskRequest

TASK_OPEN = "open"


def create_task(conn: Connection, ctx: ServiceContext, *, principal: Principal,
                request: CreateTaskRequest) -> tuple[dict[str, Any], dict[str, Any] | None]:
    now = ctx.clock.now()
    amount_cny, _ = payments.amount_in_cny(ctx, request.amount, request.currency)
    payments.check_transaction_limits(ctx, amount_cny)
    if request.dispatch:
        missing = [f for f in ("payment_method", "return_url") if getattr(request, f) is None]
        if missing:
            raise ValidationError(
                f"{' and '.join(missing)} required to dispatch a task",
                details=[{"field": f, "message": "Field required when dispatch is true"}
                         for f in missing])
    elif request.test_card is not None:
        raise ValidationError("test_card applies only when dispatching",
                              details=[{"field": "test_card", "message": "dispatch is false"}])
    return_url = payments.checked_url(request.return_url, principal=principal, field="return_url")
    callback_url = payments.checked_url(request.callback_url, principal=principal,
                                        field="callback_url")
    task_id = request.task_id or ids.task_id()
    if request.task_id is not None and repository.task_exists(
            conn, account_id=principal.account_id, mode=principal.mode, task_id=task_id):
        raise DuplicateTask(f"Task {task_id} already exists", task_id=task_id)
    task: dict[str, Any] = {
        "account_id": principal.account_id,
        "mode": principal.mode,
        "task_id": task_id,
        "title": request.title,
        "amount": request.amount,
        "currency": request.currency,
        "payment_method": request.payment_method,
        "return_url": return_url,
        "callback_url": callback_url,
        "metadata_json": None if request.metadata is None else orjson.dumps(
            request.metadata).decode(),
        "status": TASK_OPEN,
        "current_order_id": None,
        "created_at": now,
        "updated_at": now,
    }
    repository.insert_task(conn, task)
    if not request.dispatch:
        return task, None
    assert request.payment_method is not None
    order = payments.open_order(conn, ctx, principal=principal, task=task,
                                request=CreatePaymentRequest(
                                    task_id=task_id, amount=request.amount,
                                    currency=request.currency,
                                    payment_method=request.payment_method,
                                    metadata=request.metadata,
                                    expires_in_seconds=request.expires_in_seconds,
                                    test_card=request.test_card))
    task["current_order_id"] = order["order_id"]
    return task, order


def get_task(conn: Connection, *, principal: Principal, task_id: str
             ) -> tuple[dict[str, Any], str | None]:
    found = repository.get_task_with_payment_status(
        conn, account_id=principal.account_id, mode=principal.mode, task_id=task_id)
    if found is None:
        raise TaskNotFound(f"Task {task_id} doesn't exist", task_id=task_id)
    row, payment_status = found
    return dict(row), payment_status
