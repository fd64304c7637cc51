"""The OpenAPI 3.0 document, built from the route declarations and pydantic models,
and Swagger UI served from the bundled assets (works offline)."""

from __future__ import annotations

import re
from typing import Any

import pydantic
from pydantic.json_schema import models_json_schema
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

import kassa
from kassa.errors import AuthError, KassaError, RateLimited, ValidationError
from kassa.http.api import JSON, Api, json_response

REF = "#/components/schemas/{model}"


class ErrorDetail(pydantic.BaseModel):
    code: str
    message: str


class ErrorResponse(pydantic.BaseModel):
    """The seed's error format: {"error": {"code", "message", ...}}."""

    error: ErrorDetail


def _to_openapi30(node: Any) -> Any:
    """Pydantic emits JSON Schema 2020-12; Swagger UI 4 reads OpenAPI 3.0."""
    if isinstance(node, list):
        return [_to_openapi30(n) for n in node]
    if not isinstance(node, dict):
        return node
    node = {k: _to_openapi30(v) for k, v in node.items()}
    any_of = node.get("anyOf")
    if isinstance(any_of, list) and {"type": "null"} in any_of:
        # OpenAPI 3.0.3: `nullable` only widens a `type` in the same schema, so a $ref or a
        # union is made nullable by an explicit null branch (an untyped schema allows null).
        rest = [s for s in any_of if s != {"type": "null"}]
        node.pop("anyOf")
        if len(rest) == 1 and "$ref" not in rest[0]:
            node.update(rest[0])
        else:
            node["anyOf"] = [*rest, {"enum": [None]}]
        node["nullable"] = True
    if "const" in node:
        node["enum"] = [node.pop("const")]
    if node.get("nullable") is True and None not in node.get("enum", [None]):
        node["enum"] = [*node["enum"], None]  # an enum must list null to allow it
    # 2020-12 bounds are numbers; OpenAPI 3.0 pairs minimum/maximum with a boolean flag.
    for exclusive, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        value = node.get(exclusive)
        if isinstance(value, int | float) and not isinstance(value, bool):
            node[bound] = value
            node[exclusive] = True
    return node


def build_openapi(api: Api, public_url: str) -> dict[str, Any]:
    models: list[tuple[type[pydantic.BaseModel], Any]] = [(ErrorResponse, "serialization")]
    for op in api.operations:
        if op.body_model:
            models.append((op.body_model, "validation"))
        if op.response_model:
            models.append((op.response_model, "serialization"))
    _, schema = models_json_schema(models, ref_template=REF)
    components = _to_openapi30(schema.get("$defs", {}))
    paths: dict[str, dict[str, Any]] = {}
    for op in api.operations:
        item: dict[str, Any] = {
            "summary": op.summary,
            "description": op.description,
            "operationId": op.handler.__name__,
            "tags": list(op.tags),
            "security": [{"apiKey": [], "apiSecret": []}] if op.need_secret else
                        [{"apiKey": []}, {"apiKey": [], "apiSecret": []}],
            "parameters": [],
            "responses": {},
        }
        for name in re.findall(r"{(\w+)}", op.path):
            item["parameters"].append({"name": name, "in": "path", "required": True,
                                       "schema": {"type": "string"}})
        if op.query_model is not None:
            for name, f in op.query_model.model_fields.items():
                item["parameters"].append({
                    "name": name, "in": "query", "required": f.is_required(),
                    "description": f.description or "",
                    "schema": _to_openapi30(op.query_model.model_json_schema(
                        ref_template=REF)["properties"][name]),
                })
        if op.write:
            item["parameters"].append({
                "name": "Idempotency-Key", "in": "header", "required": False,
                "description": "Same key and same body within 24 h replays the first response",
                "schema": {"type": "string", "maxLength": 255}})
        if op.body_model is not None:  # (a write by GET has none)
            required = any(f.is_required() for f in op.body_model.model_fields.values())
            item["requestBody"] = {"required": required, "content": {"application/json": {
                "schema": {"$ref": REF.format(model=op.body_model.__name__)}}}}
        ok: dict[str, Any] = {"description": "Success"}
        if op.response_model is not None:
            ok["content"] = {"application/json": {
                "schema": {"$ref": REF.format(model=op.response_model.__name__)}}}
        elif op.media_type != JSON:  # bytes of another type (an invoice PDF)
            ok["content"] = {op.media_type: {"schema": {"type": "string", "format": "binary"}}}
        if op.response_headers:
            ok["headers"] = {name: {"description": description, "schema": {"type": "string"}}
                             for name, description in op.response_headers.items()}
        item["responses"][str(op.status)] = ok
        error_types: list[type[KassaError]] = [ValidationError, AuthError, *op.errors,
                                               RateLimited]
        by_status: dict[int, list[str]] = {}
        for err in error_types:
            codes = by_status.setdefault(err.http_status, [])
            if err.code not in codes:
                codes.append(err.code)
        for status, codes in sorted(by_status.items()):
            item["responses"][str(status)] = {
                "description": "Error codes: " + ", ".join(codes),
                "content": {"application/json": {
                    "schema": {"$ref": REF.format(model="ErrorResponse")}}},
            }
        paths.setdefault(op.path, {})[op.method.lower()] = item
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Kassa payment API",
            "version": kassa.__version__,
            "description": "Escrow payments for task marketplaces (ZhenRent-compatible).",
        },
        "servers": [{"url": public_url}],
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "apiKey": {"type": "http", "scheme": "bearer",
                           "description": "zr_live_… or zr_test_… key"},
                "apiSecret": {"type": "apiKey", "in": "header", "name": "X-API-Secret"},
            },
        },
    }


_DOCS_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Kassa API</title>
<link rel="stylesheet" href="/docs/static/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="/docs/static/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui"});</script>
</body></html>"""


def docs_routes(api: Api, public_url: str) -> list[BaseRoute]:
    document: dict[str, Any] = {}

    async def openapi(_: Request) -> Response:
        if not document:
            document.update(build_openapi(api, public_url))
        return json_response(200, document)

    async def docs(_: Request) -> Response:
        return HTMLResponse(_DOCS_HTML)

    return [
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/docs", docs, methods=["GET"]),
        Mount("/docs/static", StaticFiles(directory=str(swagger_ui_path)), name="docs-static"),
    ]
