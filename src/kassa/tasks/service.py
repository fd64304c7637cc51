"""Task rules (SPEC §4): create a task and, when dispatched, its payment order."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Connection

from kassa.accounts.schemas import Principal
from kassa.context import ServiceContext
from kassa.core import ids
from kassa.core.states import OrderStatus, TaskStatus
from kassa.errors import DuplicateTask, InvalidTaskState, TaskNotFound, ValidationError
from kassa.events import repository as events
from kassa.payments import repository as orders
from kassa.payments import service as payments
from kassa.payments.schemas import CreatePaymentRequest, held_cny, render_order
from kassa.refunds import service as refunds
from kassa.refunds.schemas import TaskCloseRequest, render_refund
from kassa.tasks import repository
from kassa.tasks.schemas import CreateTaskRequest, render_task
from kassa.upstreams.calls import UpstreamSlot


def create_task(conn: Connection, ctx: ServiceContext, *, principal: Principal,
                request: CreateTaskRequest, slot: UpstreamSlot | None = None
                ) -> tuple[dict[str, Any], dict[str, Any] | None]:
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
        "status": TaskStatus.OPEN,
        "current_order_id": None,
        "worker_id": None,
        "event_seq": 0,
        "closed_at": None,
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
                                    test_card=request.test_card), slot=slot)
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


def _locked_task(conn: Connection, principal: Principal, task_id: str) -> dict[str, Any]:
    task = repository.get_task(conn, account_id=principal.account_id, mode=principal.mode,
                               task_id=task_id, for_update=True)
    if task is None:
        raise TaskNotFound(f"Task {task_id} doesn't exist", task_id=task_id)
    if task["status"] != TaskStatus.OPEN:
        raise InvalidTaskState(f"Task {task_id} is already {task['status']}", task_id=task_id,
                               task_status=task["status"])
    return task


def _locked_order(conn: Connection, task: Mapping[str, Any]) -> dict[str, Any] | None:
    order_id = task["current_order_id"]
    return None if order_id is None else orders.get_order_by_id(conn, order_id, for_update=True)


def _close(conn: Connection, ctx: ServiceContext, *, principal: Principal,
           task: Mapping[str, Any], status: TaskStatus, worker_id: str | None,
           payment_status: str | None, extra: dict[str, Any], now: datetime) -> dict[str, Any]:
    closed = repository.close_task(conn, account_id=principal.account_id, mode=principal.mode,
                                   task_id=task["task_id"], status=status, worker_id=worker_id,
                                   now=now)
    assert closed is not None, "the task is locked and was open"
    events.record(conn, account_id=principal.account_id, mode=principal.mode,
                  event_type=f"task.{status}", object_id=task["task_id"],
                  sequence=closed["event_seq"],
                  data={"task": render_task(closed, payment_status), **extra},
                  callback_url=closed["callback_url"], now=now)
    return closed


def approve_task(conn: Connection, ctx: ServiceContext, *, principal: Principal, task_id: str,
                 worker_id: str) -> dict[str, Any]:
    """Release everything in escrow to the worker, minus the platform fee."""
    now = ctx.clock.now()
    task = _locked_task(conn, principal, task_id)
    order = _locked_order(conn, task)
    status = None if order is None else order["status"]
    if order is None or status not in (OrderStatus.COMPLETED, OrderStatus.REFUNDED):
        raise InvalidTaskState(f"Task {task_id} has not been paid (payment: {status or 'none'})",
                               task_id=task_id, task_status=task["status"],
                               payment_status=status)
    if held_cny(order) <= 0:
        raise InvalidTaskState(f"Task {task_id}'s payment was refunded: nothing is in escrow",
                               task_id=task_id, task_status=task["status"],
                               payment_status=status)
    release, order = payments.release_order(conn, order=order, worker_id=worker_id, now=now)
    payment = render_order(order, ctx.public_url)
    closed = _close(conn, ctx, principal=principal, task=task, status=TaskStatus.APPROVED,
                    worker_id=worker_id, payment_status=order["status"],
                    extra={"release": release}, now=now)
    return {"task": render_task(closed, order["status"]), "payment": payment,
            "release": release}


def end_task(conn: Connection, ctx: ServiceContext, *, principal: Principal, task_id: str,
             status: TaskStatus, request: TaskCloseRequest) -> dict[str, Any]:
    """Fail or cancel a task: what is in escrow is refunded (reason task_failed /
    task_cancelled); a payment not yet made is failed so it can no longer be paid."""
    now = ctx.clock.now()
    reason = "task_failed" if status == TaskStatus.FAILED else "task_cancelled"
    task = _locked_task(conn, principal, task_id)
    order = _locked_order(conn, task)
    refund = None
    if order is not None:
        if order["status"] == OrderStatus.PROCESSING:
            raise InvalidTaskState(
                f"Task {task_id}'s payment is still processing: try again once it has settled",
                task_id=task_id, task_status=task["status"], payment_status=order["status"])
        if order["status"] == OrderStatus.PENDING:
            payments.fail_order(conn, ctx, order_id=order["order_id"], failure_code=reason,
                                failure_message=f"The task was {status}", now=now)
        elif held_cny(order) > 0:
            refund = refunds.refund_order(
                conn, ctx, order=order, amount=None, reason=reason,
                reason_detail=request.reason_detail,
                refund_method=request.refund_method or refunds.automatic_method(ctx, order),
                test_outcome=request.test_outcome)
        order = orders.get_order_by_id(conn, order["order_id"])
        assert order is not None
    elif request.test_outcome is not None and principal.live:
        raise ValidationError("test_outcome is accepted with test keys only",
                              details=[{"field": "test_outcome", "message": "test mode only"}])
    payment = None if order is None else render_order(order, ctx.public_url)
    rendered_refund = None if refund is None else render_refund(refund)
    payment_status = None if order is None else order["status"]
    closed = _close(conn, ctx, principal=principal, task=task, status=status, worker_id=None,
                    payment_status=payment_status, extra={"refund": rendered_refund}, now=now)
    return {"task": render_task(closed, payment_status), "payment": payment,
            "refund": rendered_refund}
