"""/openapi.json is a valid OpenAPI 3.0 document that describes what the API really
returns, and /docs serves Swagger UI from bundled assets."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from openapi_schema_validator import OAS30ReadValidator, OAS30WriteValidator
from openapi_spec_validator import OpenAPIV30SpecValidator

from tests.support.factories import RETURN_URL, new_task, pay
from tests.support.harness import KassaServer, Merchant


@pytest.fixture
def document(server: KassaServer) -> dict[str, Any]:
    r = httpx.get(f"{server.base_url}/openapi.json")  # public: no credentials
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    doc: dict[str, Any] = r.json()
    return doc


def schema_check(document: dict[str, Any], name: str, instance: Any) -> None:
    """Validate `instance` against components/schemas/<name>, refs resolved in the document.

    The pydantic-made schemas allow extra properties, so the keys are compared too:
    the document must describe every field returned, and nothing that is not."""
    root = {"$ref": f"#/components/schemas/{name}", "components": document["components"]}
    errors = sorted(OAS30ReadValidator(root).iter_errors(instance), key=str)
    assert not errors, [f"{list(e.absolute_path)}: {e.message}" for e in errors]
    schema = document["components"]["schemas"][name]
    if "properties" in schema and isinstance(instance, dict):
        assert set(instance) == set(schema["properties"]), name
        assert set(schema.get("required", [])) <= set(instance), name


def test_document_is_valid_openapi_30(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.0.")
    errors = [e.message for e in OpenAPIV30SpecValidator(document).iter_errors()]
    assert not errors, errors[:5]


def test_document_lists_the_payment_and_task_endpoints(document: dict[str, Any]) -> None:
    paths = document["paths"]
    assert "post" in paths["/api/v1/payment/create"]
    assert "get" in paths["/api/v1/payment/query"]
    assert "post" in paths["/api/v1/tasks"]
    assert "get" in paths["/api/v1/tasks/{task_id}"]

    create = paths["/api/v1/payment/create"]["post"]
    query = paths["/api/v1/payment/query"]["get"]
    order_ref = {"$ref": "#/components/schemas/PaymentOrder"}
    assert create["responses"]["201"]["content"]["application/json"]["schema"] == order_ref
    assert query["responses"]["200"]["content"]["application/json"]["schema"] == order_ref
    assert {(p["name"], p["in"], p["required"]) for p in query["parameters"]} == {
        ("order_id", "query", True), ("verify", "query", False)}
    assert {(p["name"], p["in"], p["required"])
            for p in paths["/api/v1/tasks/{task_id}"]["get"]["parameters"]} == {
        ("task_id", "path", True)}

    # The seed's error tables, row by row, are documented on the operations.
    def documented(op: dict[str, Any]) -> set[tuple[int, str]]:
        rows = set()
        for status, response in op["responses"].items():
            if int(status) >= 400:
                codes = response["description"].removeprefix("Error codes: ").split(", ")
                rows |= {(int(status), code) for code in codes}
                assert response["content"]["application/json"]["schema"] == {
                    "$ref": "#/components/schemas/ErrorResponse"}
        return rows

    assert documented(create) >= {
        (400, "validation_error"), (400, "amount_mismatch"), (401, "invalid_credentials"),
        (404, "task_not_found"), (409, "duplicate_order"), (429, "rate_limit_exceeded")}
    assert documented(query) >= {(401, "invalid_credentials"), (404, "order_not_found")}


def _create(client: httpx.Client, amount: int = 5000, currency: str = "CNY",
            **payment: Any) -> httpx.Response:
    task_id = new_task(client, amount=amount, currency=currency, title="Schema check")
    return pay(client, task_id, amount, currency=currency, **payment)


def test_create_and_query_responses_match_the_payment_order_schema(
        server: KassaServer, merchant: Merchant, document: dict[str, Any]) -> None:
    c = merchant.test
    created = [
        _create(c),
        _create(c, currency="USD", callback_url="https://merchant.example/hook",
                metadata={"nested": {"list": [1, "two", None]}, "flag": True}),
        _create(c, payment_method="wechat", expires_in_seconds=300),
        _create(c, payment_method="card"),  # waits for a card: no card details yet
        _create(c, payment_method="card", test_card="4242424242424242"),
        _create(c, payment_method="card", test_card="4000000000000002"),
        _create(c, payment_method="card", test_card="4000000000009995"),
    ]
    for r in created:
        assert r.status_code == 201, r.text
        schema_check(document, "PaymentOrder", r.json())

    order_ids = [r.json()["order_id"] for r in created]
    final = {order_ids[0]: "completed", order_ids[1]: "completed", order_ids[4]: "completed",
             order_ids[5]: "failed", order_ids[6]: "failed"}
    seen_statuses = set()
    for order_id in order_ids:
        query = c.get("/api/v1/payment/query", params={"order_id": order_id})
        assert query.status_code == 200, query.text
        schema_check(document, "PaymentOrder", query.json())
        if order_id in final:
            settled = server.wait_for_status(c, order_id, final[order_id])
            schema_check(document, "PaymentOrder", settled)
            seen_statuses.add(settled["status"])
    assert seen_statuses == {"completed", "failed"}
    # Non-null variants were exercised too, not only nulls.
    usd = c.get("/api/v1/payment/query", params={"order_id": order_ids[1]}).json()
    assert usd["fx_rate"] is not None and usd["metadata"] is not None
    assert usd["transaction_id"] is not None and usd["paid_at"] is not None
    assert c.get("/api/v1/payment/query", params={"order_id": order_ids[5]}).json()["card"]


def test_task_responses_match_their_schemas(server: KassaServer, merchant: Merchant,
                                            document: dict[str, Any]) -> None:
    dispatched = merchant.test.post("/api/v1/tasks", json={
        "title": "Dispatched", "amount": 5000, "currency": "CNY", "payment_method": "alipay",
        "return_url": RETURN_URL, "metadata": {"a": 1}})
    assert dispatched.status_code == 201, dispatched.text
    schema_check(document, "TaskCreated", dispatched.json())
    schema_check(document, "PaymentOrder", dispatched.json()["payment"])
    schema_check(document, "Task", dispatched.json()["task"])

    undispatched = merchant.test.post("/api/v1/tasks", json={
        "title": "Later", "amount": 5000, "currency": "CNY", "dispatch": False})
    assert undispatched.status_code == 201, undispatched.text
    schema_check(document, "TaskCreated", undispatched.json())

    for body in (dispatched.json(), undispatched.json()):
        r = merchant.test.get(f"/api/v1/tasks/{body['task']['task_id']}")
        assert r.status_code == 200
        schema_check(document, "Task", r.json())


def test_error_responses_match_the_error_schema(server: KassaServer, merchant: Merchant,
                                                document: dict[str, Any]) -> None:
    with server.client() as anonymous:
        responses = [
            anonymous.post("/api/v1/payment/create", json={}),
            merchant.test.post("/api/v1/payment/create", json={"amount": "x"}),
            merchant.test.get("/api/v1/payment/query", params={"order_id": "ord_missing"}),
            merchant.test.get("/api/v1/tasks/missing"),
        ]
    assert [r.status_code for r in responses] == [401, 400, 404, 404]
    root = {"$ref": "#/components/schemas/ErrorResponse", "components": document["components"]}
    for r in responses:
        errors = list(OAS30ReadValidator(root).iter_errors(r.json()))
        assert not errors, [e.message for e in errors]
    # The schema is not vacuous: a body without the error object fails it.
    assert list(OAS30ReadValidator(root).iter_errors({"code": "x", "message": "y"}))


def test_docs_page_serves_swagger_ui(server: KassaServer) -> None:
    with httpx.Client(base_url=server.base_url) as client:
        r = client.get("/docs")
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/html")
        assert "/docs/static/swagger-ui-bundle.js" in r.text
        assert "/openapi.json" in r.text
        assets = re.findall(r'(?:src|href)="(/[^"]+)"', r.text)
        assert "/docs/static/swagger-ui-bundle.js" in assets
        for asset in assets:
            a = client.get(asset)
            assert a.status_code == 200, asset
            assert len(a.content) > 1000, asset
        js = client.get("/docs/static/swagger-ui-bundle.js")
        assert "javascript" in js.headers["content-type"]
        assert b"SwaggerUIBundle" in js.content
        assert client.get("/docs/static/no-such-file.js").status_code == 404


@pytest.mark.parametrize(("schema", "body", "valid"), [
    ("CreatePaymentRequest", {"task_id": "t", "amount": 5000, "payment_method": "alipay"}, True),
    ("CreatePaymentRequest", {"task_id": "t", "amount": 5000, "payment_method": "card",
                              "currency": None, "return_url": None, "callback_url": None,
                              "metadata": None, "expires_in_seconds": None,
                              "test_card": None}, True),
    ("CreatePaymentRequest", {"task_id": "t", "amount": 5000, "currency": "USD",
                              "payment_method": "wechat", "metadata": {"a": [1]},
                              "expires_in_seconds": 300}, True),
    ("CreatePaymentRequest", {"task_id": "t", "amount": 0, "payment_method": "alipay"}, False),
    ("CreatePaymentRequest", {"task_id": "t", "amount": 5000, "payment_method": "paypal"},
     False),
    ("CreatePaymentRequest", {"task_id": "t", "amount": 5000, "payment_method": "alipay",
                              "currency": "EUR"}, False),
    ("CreatePaymentRequest", {"task_id": "t", "amount": 5000, "payment_method": "alipay",
                              "amout": 1}, False),
    ("CreatePaymentRequest", {"amount": 5000, "payment_method": "alipay"}, False),
    ("CreateTaskRequest", {"title": "t", "amount": 5000, "currency": "CNY",
                           "payment_method": None, "dispatch": False}, True),
    ("CreateTaskRequest", {"title": "t", "amount": 5000, "currency": "CNY",
                           "task_id": "../x"}, False),
])
def test_request_schemas_agree_with_the_server(server: KassaServer, merchant: Merchant,
                                               document: dict[str, Any], schema: str,
                                               body: dict[str, Any], valid: bool) -> None:
    """What the document says about a request body is what the server does with it: a
    schema-valid body passes validation (it may still fail a business rule), an invalid
    one is a 400 validation_error."""
    root = {"$ref": f"#/components/schemas/{schema}", "components": document["components"]}
    errors = list(OAS30WriteValidator(root).iter_errors(body))
    assert (not errors) == valid, [e.message for e in errors]
    paying = schema == "CreatePaymentRequest"
    r = merchant.test.post("/api/v1/payment/create" if paying else "/api/v1/tasks", json=body)
    if valid:
        # Past validation: a payment for the unknown task "t" is task_not_found.
        assert r.status_code == (404 if paying else 201), r.text
    else:
        assert r.status_code == 400 and r.json()["error"]["code"] == "validation_error", r.text
