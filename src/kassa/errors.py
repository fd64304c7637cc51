"""Kassa's error tree. Every error has a stable `.code` and `.http_status`.

    KassaError                       (4xx/5xx in the seed's {"error": {...}} format)
    ├── ClientError                  the request is wrong: fix it, don't retry as is
    │   ├── ValidationError          400 validation_error (with per-field details)
    │   ├── AmountMismatch           400 amount_mismatch
    │   ├── LimitExceeded            400 limit_exceeded
    │   ├── PaymentMethodUnavailable 400 payment_method_unavailable
    │   ├── IdempotencyKeyReused     400 idempotency_key_reused
    │   ├── InsufficientFunds        400 insufficient_funds
    │   ├── RefundNotAllowed         400 refund_not_allowed
    │   └── AlreadyRefunded          400 already_refunded
    ├── AuthError                    401 invalid_credentials
    ├── LiveKeyRequired              403 live_key_required: use the live key for this
    ├── NotFound                     404 task_not_found / order_not_found /
    │                                    worker_not_found / endpoint_not_found /
    │                                    event_not_found / payment_not_found /
    │                                    not_found
    ├── Conflict                     409 duplicate_order / request_in_progress /
    │                                    invalid_task_state / invalid_order_state:
    │                                    look, then retry
    ├── RateLimited                  429 rate_limit_exceeded: wait Retry-After seconds
    └── UpstreamFailure              a live upstream failed us (retry_allowed says whether
        │                            trying again may help; nothing was created)
        ├── PaymentFailed            502 payment_failed: the upstream said no
        └── UpstreamUnavailable      503 payment_method_unavailable: unreachable, try later
"""

from __future__ import annotations

from typing import Any


class KassaError(Exception):
    code = "internal_error"
    http_status = 500

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, **self.extra}}


class ClientError(KassaError):
    code = "bad_request"
    http_status = 400


class ValidationError(ClientError):
    code = "validation_error"


class AmountMismatch(ClientError):
    code = "amount_mismatch"


class LimitExceeded(ClientError):
    code = "limit_exceeded"


class PaymentMethodUnavailable(ClientError):
    code = "payment_method_unavailable"


class IdempotencyKeyReused(ClientError):
    code = "idempotency_key_reused"


class InsufficientFunds(ClientError):
    code = "insufficient_funds"


class RefundNotAllowed(ClientError):
    code = "refund_not_allowed"


class AlreadyRefunded(ClientError):
    code = "already_refunded"


class AuthError(KassaError):
    code = "invalid_credentials"
    http_status = 401


class LiveKeyRequired(KassaError):
    code = "live_key_required"
    http_status = 403


class NotFound(KassaError):
    code = "not_found"
    http_status = 404


class TaskNotFound(NotFound):
    code = "task_not_found"


class OrderNotFound(NotFound):
    code = "order_not_found"


class WorkerNotFound(NotFound):
    code = "worker_not_found"


class EndpointNotFound(NotFound):
    code = "endpoint_not_found"


class EventNotFound(NotFound):
    code = "event_not_found"


class PaymentNotFound(NotFound):
    """Seed 004's Payments resource: no Payment of yours with that id."""

    code = "payment_not_found"


class Conflict(KassaError):
    code = "conflict"
    http_status = 409


class DuplicateOrder(Conflict):
    code = "duplicate_order"


class DuplicateTask(Conflict):
    code = "duplicate_task"


class InvalidTaskState(Conflict):
    """The task is not in a state that allows this (already approved, cancelled, unpaid)."""

    code = "invalid_task_state"


class InvalidOrderState(Conflict):
    """The order is not in a state that allows this (retrying a completed order)."""

    code = "invalid_order_state"


class RequestInProgress(Conflict):
    code = "request_in_progress"


class AlreadyRotated(Conflict):
    """A rotation asked for against a key or secret that has been rotated since (a form
    sent twice): nothing is rotated again."""

    code = "already_rotated"


class RateLimited(KassaError):
    code = "rate_limit_exceeded"
    http_status = 429

    def __init__(self, message: str, retry_after: int, **extra: Any) -> None:
        super().__init__(message, **extra)
        self.retry_after = retry_after


class UpstreamFailure(KassaError):
    code = "payment_failed"
    http_status = 502


class PaymentFailed(UpstreamFailure):
    code = "payment_failed"
    http_status = 502


class UpstreamUnavailable(UpstreamFailure):
    code = "payment_method_unavailable"
    http_status = 503


class PayloadTooLarge(ClientError):
    code = "request_too_large"
    http_status = 413
