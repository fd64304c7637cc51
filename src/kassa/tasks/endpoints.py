"""HTTP only: POST /api/v1/tasks and GET /api/v1/tasks/{task_id} (SPEC §4)."""

from __future__ import annotations

import re
from collections.abc import Callable

from sqlalchemy import Connection

from kassa.core.states import TaskStatus
from kassa.errors import (
    AmountMismatch,
    DuplicateOrder,
    DuplicateTask,
    InsufficientFunds,
    InvalidTaskState,
    LimitExceeded,
    PaymentMethodUnavailable,
    TaskNotFound,
)
from kassa.http.api import Api, Call, UnitResult
from kassa.payments.schemas import render_order
from kassa.refunds.schemas import TaskCloseRequest
from kassa.tasks import service
from kassa.tasks.schemas import (
    TASK_ID_PATTERN,
    ApproveRequest,
    CreateTaskRequest,
    Task,
    TaskApproved,
    TaskClosed,
    TaskCreated,
    render_task,
)

api = Api()


@api.post("/api/v1/tasks", summary="Create a task (and, unless dispatch is false, its payment)",
          body=CreateTaskRequest, response=TaskCreated, status=201, tags=("tasks",),
          errors=(AmountMismatch, LimitExceeded, PaymentMethodUnavailable, InsufficientFunds,
                  DuplicateTask, DuplicateOrder))
def create_task(call: Call):  # type: ignore[no-untyped-def]
    """Create a task with its cost. When dispatched (the default) its payment order is
    created in the same call and both are returned."""
    request: CreateTaskRequest = call.body

    def unit(conn: Connection) -> UnitResult:
        task, order = service.create_task(conn, call.ctx, principal=call.principal,
                                          request=request, slot=call.upstream)
        payment = None if order is None else render_order(order, call.ctx.public_url)
        return 201, {"task": render_task(task, order["status"] if order else None),
                     "payment": payment}

    return unit


@api.get("/api/v1/tasks/{task_id}", summary="Retrieve a task", response=Task, tags=("tasks",),
         errors=(TaskNotFound,))
def get_task(call: Call):  # type: ignore[no-untyped-def]
    """A task with the status of its current payment order."""
    task_id = call.request.path_params["task_id"]

    def unit(conn: Connection) -> UnitResult:
        task, payment_status = service.get_task(conn, principal=call.principal, task_id=task_id)
        return 200, render_task(task, payment_status)

    return unit


_TASK_ID = re.compile(TASK_ID_PATTERN)


def _task_id(call: Call) -> str:
    task_id: str = call.request.path_params["task_id"]
    if not _TASK_ID.fullmatch(task_id):
        raise TaskNotFound(f"Task {task_id[:64]} doesn't exist", task_id=task_id[:64])
    return task_id


@api.post("/api/v1/tasks/{task_id}/approve", summary="Approve a task: release the escrow",
          body=ApproveRequest, response=TaskApproved, tags=("tasks",),
          errors=(TaskNotFound, InvalidTaskState))
def approve_task(call: Call):  # type: ignore[no-untyped-def]
    """Release what the task's payment holds in escrow to `worker_id`: the worker's payout
    and the platform fee (20% by default, round half up; the parts always sum to the
    whole) as one balanced ledger entry."""
    task_id = _task_id(call)
    request: ApproveRequest = call.body

    def unit(conn: Connection) -> UnitResult:
        return 200, service.approve_task(conn, call.ctx, principal=call.principal,
                                         task_id=task_id, worker_id=request.worker_id)

    return unit


def _end(call: Call, status: TaskStatus) -> Callable[[Connection], UnitResult]:
    task_id = _task_id(call)
    request: TaskCloseRequest = call.body

    def unit(conn: Connection) -> UnitResult:
        return 200, service.end_task(conn, call.ctx, principal=call.principal, task_id=task_id,
                                     status=status, request=request)

    return unit


@api.post("/api/v1/tasks/{task_id}/fail", summary="Fail a task: refund the escrow",
          body=TaskCloseRequest, response=TaskClosed, tags=("tasks",),
          errors=(TaskNotFound, InvalidTaskState))
def fail_task(call: Call):  # type: ignore[no-untyped-def]
    """The worker failed the task: everything still in escrow is refunded automatically
    (reason task_failed), through the original channel unless `refund_method` is
    `balance`. A payment not yet made is failed instead. The body may be `{}`."""
    return _end(call, TaskStatus.FAILED)


@api.post("/api/v1/tasks/{task_id}/cancel", summary="Cancel a task: refund the escrow",
          body=TaskCloseRequest, response=TaskClosed, tags=("tasks",),
          errors=(TaskNotFound, InvalidTaskState))
def cancel_task(call: Call):  # type: ignore[no-untyped-def]
    """You cancel the task: everything still in escrow is refunded automatically (reason
    task_cancelled), through the original channel unless `refund_method` is `balance`. A
    payment not yet made is failed instead. The body may be `{}`."""
    return _end(call, TaskStatus.CANCELLED)
