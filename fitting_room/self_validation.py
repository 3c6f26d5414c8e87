"""Routes that read their own request: the JSON body and the Idempotency-Key checked without FastAPI's solving.

The kiosk's and gates' per-customer routes take the bare Request (`SelfValidatedRoute`): pydantic parses the body's
bytes straight into the request model, where a declared body parameter went through json.loads, a second
validation and FastAPI's dependency solving. Errors keep FastAPI's 422 shape, and the OpenAPI document describes
bodies and headers as if they were declared (`self_validated`, `add_body_schemas`).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterable
from typing import Any, TypeVar, cast

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError

B = TypeVar("B", bound=BaseModel)

IDEMPOTENCY_HEADER = "Idempotency-Key"
IDEMPOTENCY_MAX_LENGTH = 200
# The header as the OpenAPI operations of the routes reading it (`idempotency_key`) describe it.
IDEMPOTENCY_PARAMETER = {
    "name": IDEMPOTENCY_HEADER,
    "in": "header",
    "required": False,
    "description": "Retry-safe key: a retry with the same key and body returns the first response.",
    "schema": {"type": "string", "minLength": 1, "maxLength": IDEMPOTENCY_MAX_LENGTH},
}

# An endpoint that takes the request as it came and answers with the finished response.
Endpoint = Callable[[Request], Coroutine[Any, Any, Response]]


class SelfValidatedRoute(APIRoute):
    """A route whose endpoint takes the Request, checks its key and body itself and returns the Response.

    FastAPI's request handler would solve the endpoint's one parameter and pass its Response through untouched:
    ~14 µs of every kiosk call for nothing. Its OpenAPI operation comes from the route as for any other.
    """

    def get_route_handler(self) -> Endpoint:
        """The endpoint itself."""
        return cast(Endpoint, self.endpoint)


def self_validated(model: type[BaseModel], security_scheme: str, *, idempotent: bool = False) -> dict[str, Any]:
    """OpenAPI of a route that checks the caller's key (`security_scheme`), validates its JSON body (`json_body`)
    and, if `idempotent`, reads its Idempotency-Key (`idempotency_key`) itself."""
    body = {"content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}
    operation: dict[str, Any] = {"requestBody": {**body, "required": True}, "security": [{security_scheme: []}]}
    if idempotent:
        operation["parameters"] = [IDEMPOTENCY_PARAMETER]
    return operation


def add_body_schemas(document: dict[str, Any], models: Iterable[type[BaseModel]]) -> None:
    """Put the self-validated bodies' schemas among an OpenAPI document's components, in name order."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for model in models:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    document["components"]["schemas"] = dict(sorted(schemas.items()))


def idempotency_key(request: Request) -> str | None:
    """The request's Idempotency-Key (1-200 characters), None without one; 422 as for a declared header."""
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is None or 1 <= len(key) <= IDEMPOTENCY_MAX_LENGTH:
        return key
    limit = "at least 1 character" if not key else f"at most {IDEMPOTENCY_MAX_LENGTH} characters"
    kind = "string_too_short" if not key else "string_too_long"
    error = {"type": kind, "loc": ("header", IDEMPOTENCY_HEADER), "msg": f"String should have {limit}", "input": key}
    raise RequestValidationError([error])


async def json_body(request: Request, model: type[B]) -> B:
    """The request's JSON body as `model`, or 422 with FastAPI's error shape (locations under "body").

    pydantic parses and validates the bytes in one pass: a declared body parameter goes through json.loads,
    then validates the objects and its dependency solving, ~30 µs more per request on the kiosk's hot routes.
    """
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        message = f"Content-Type must be application/json, got {media_type or 'none'!r}"
        raise RequestValidationError([{"type": "content_type", "loc": ("body",), "msg": message, "input": None}])
    raw = await request.body()
    if not raw:
        raise RequestValidationError([{"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}])
    try:
        return model.model_validate_json(raw)
    except ValidationError as err:
        raise RequestValidationError([_located_in_body(e) for e in err.errors(include_url=False)]) from None


def _located_in_body(error: Any) -> dict[str, Any]:
    """A pydantic error as FastAPI reports a body's: under "body", JSON-safe (undecodable bytes echo as None)."""
    input_value = None if isinstance(error["input"], bytes) else error["input"]
    return {**error, "loc": ("body", *error["loc"]), "input": input_value}
