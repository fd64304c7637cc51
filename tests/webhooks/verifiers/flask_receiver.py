"""The seed's Python webhook verifier ("Payment Webhooks" > "Python Example"), as the seed
shows it, between the two marker lines. Only WEBHOOK_SECRET, which the seed leaves to the
reader ("Your webhook secret from Platform Console"), is set from outside: the test loads
a fresh copy of this module per receiver (`load_receiver`) and sets it to the account's
webhook secret (or a wrong one).

Below the seed's code, test instrumentation records each answer: (status, event_id).
"""
# ruff: noqa: E402, I001, SIM108, RUF100

WEBHOOK_SECRET = ""  # set by the test: the account's webhook secret

# ---- the seed's example, unchanged ----
import hmac
import hashlib
def verify_webhook_signature(payload, signature, secret):
    """
    Verify ZhenRent webhook signature.
    Args:
    payload: Raw request body (bytes)
    signature: X-Signature header value
    secret: Your webhook secret from Platform Console
    Returns:
    bool: True if signature is valid
    """
    expected_signature = hmac.new(
        secret.encode('utf-8'),
        payload,
        hashlib.sha256
    ).hexdigest()
    # Extract signature from header (format: "sha256=...")
    provided_signature = signature.split('=')[1] if '=' in signature else signature
    return hmac.compare_digest(expected_signature, provided_signature)
# Flask example
from flask import Flask, request, jsonify
app = Flask(__name__)
@app.route('/webhooks/payment', methods=['POST'])
def payment_webhook():
    # Get signature from header
    signature = request.headers.get('X-Signature')
    if not signature:
        return jsonify({'error': 'Missing signature'}), 401
    # Verify signature
    if not verify_webhook_signature(request.data, signature, WEBHOOK_SECRET):
        return jsonify({'error': 'Invalid signature'}), 401
    # Process webhook
    payload = request.json
    event = payload['event']
    if event == 'payment.completed':
        order_id = payload['data']['order_id']
        print(f"Payment completed: {order_id}")
        # Update your database, send confirmation email, etc.
    elif event == 'payment.failed':
        order_id = payload['data']['order_id']
        print(f"Payment failed: {order_id}")
        # Notify user, retry payment, etc.
    return jsonify({'status': 'received'}), 200
# ---- end of the seed's example ----


# Test instrumentation (not from the seed): what the seed's route answered, per request.
import json
import threading
from typing import Any

ANSWERS: list[tuple[int, str | None]] = []  # (status, event_id of the body, if any)
_lock = threading.Lock()


@app.after_request
def _record(response: Any) -> Any:
    try:
        event_id = json.loads(request.get_data()).get("event_id")
    except ValueError:
        event_id = None
    with _lock:
        ANSWERS.append((response.status_code, event_id))
    return response


def accepted() -> list[str]:
    """The event ids the seed's route answered 200 to, in order."""
    with _lock:
        return [e for status, e in ANSWERS if status == 200 and e is not None]


def rejected() -> list[tuple[int, str | None]]:
    with _lock:
        return [(status, e) for status, e in ANSWERS if status != 200]
