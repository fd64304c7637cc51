"""HTTP only: POST /api/v1/tasks and GET /api/v1/tasks/{task_id} (SPEC §4)."""

from __future__ import annotations

from sqlalchemy import Connection

from kassa.errors import (
    AmountMismatch,
    DuplicateOrder,
    DuplicateTask,
    LimitExceeded,
    PaymentMethodUnavailable,
    TaskNotFound,
)
from kassa.http.api import Api, Call, UnitResult
from kassa.payments.schemas import render_order
from kassa.tasks import service
from kassa.tasks.schemas import CreateTaskRequest, Task, TaskCreated, render_task

api = Api()


@api.post("/api/v1/tasks", summary="Create a task (and, unless dispatch is false, its payment)",
          body=CreateTaskRequest, response=TaskCreated, status=201, tags=("tasks",),
          errors=(AmountMismatch, LimitExceeded, PaymentMethodUnavailable, DuplicateTask,
                  DuplicateOrder))
def create_task(call: Call):  # type: ignore[no-untyped-def]
    """Create a task with its cost. When dispatched (the default) its payment order is
    created in the same call and both are returned."""
    request: CreateTaskRequest = call.body

    def unit(conn: Connection) -> UnitResult:
        task, order = service.create_task(conn, call.ctx, principal=call.principal,
                                          request=request)
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
