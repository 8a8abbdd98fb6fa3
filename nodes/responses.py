"""The nodes that end an endpoint's run with its answer."""

from __future__ import annotations

from flowengine.errors import FlowError
from flowengine.registry import Param, node_type
from flowengine.types import Reply


@node_type(
    "return-success",
    outputs=(),
    params={
        "status": Param.literal({"type": "integer", "minimum": 200, "maximum": 299}, default=200),
        "body": Param.expression(description="the JSON body; a mapping's values are expressions"),
    },
    description="Answer the request with a JSON body (bare, no envelope).",
)
async def return_success(ctx, params):
    return None, Reply(params["status"], params.get("body"))


@node_type(
    "return-error",
    outputs=(),
    params={
        "status": Param.literal({"type": "integer", "minimum": 400, "maximum": 599}, default=400),
        "code": Param.literal({"type": "string", "pattern": "^[a-z][a-z0-9_]*$"}),
        "message": Param.template(required=True),
        "details": Param.expression(),
    },
    description=(
        "Answer the request with an error in the Altogic shape {errors: [{origin, code, message, details}]}; "
        "a 429 whose details have retryAfter also gets a Retry-After header."
    ),
)
async def return_error(ctx, params):
    status, details = params["status"], params.get("details")
    code = params.get("code") or ("bad_request" if status < 500 else "server_error")
    error = FlowError(code, params["message"], status=status, details=details)
    wait = details.get("retryAfter") if status == 429 and isinstance(details, dict) else None
    headers = {"Retry-After": str(wait)} if isinstance(wait, int) and not isinstance(wait, bool) else {}
    return None, Reply(status, error.body(), headers)
