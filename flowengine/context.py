"""What a node sees while it runs: the services, the run's names and where it is.

One ``RunContext`` is made per run and shared by its nodes; ``ctx.node`` is the id of the
node currently running. Nodes reach the outside world only through these attributes, so a
node never touches a driver and a test can swap any service.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
import time

from flowengine.types import Scope

log = logging.getLogger("flowengine.run")

DEFAULT_CALL_DEPTH = 8


@dataclass
class Services:
    """The runtime services of one app; built once at start-up."""

    cache: Any = None
    sms: Any = None
    email: Any = None
    store: Any = None
    storage: Any = None
    auth: Any = None
    settings: dict[str, Any] = field(default_factory=dict)
    app_dir: Path = Path(".")
    #: Wall-clock seconds; tests inject a frozen clock here.
    clock: Callable[[], float] = time.time
    #: The app's secret key (``secret:`` in app.yaml): signs one-time codes.
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    #: Set by the app once its flows are compiled, so a node can run another flow.
    flows: Any = None

    async def close(self) -> None:
        # Auth first: it lets emails still on their way go out through the others.
        for service in (self.auth, self.cache, self.sms, self.email, self.store, self.storage):
            closer = getattr(service, "close", None)
            if closer is not None:
                await closer()


class RunContext:
    """The context of one run of one flow."""

    __slots__ = ("services", "scope", "flow", "node", "depth")

    def __init__(self, services: Services, scope: Scope, flow: str, depth: int = 0) -> None:
        self.services = services
        self.scope = scope
        self.flow = flow
        self.node = ""
        self.depth = depth

    @property
    def cache(self) -> Any:
        return self.services.cache

    @property
    def store(self) -> Any:
        return self.services.store

    @property
    def sms(self) -> Any:
        return self.services.sms

    @property
    def email(self) -> Any:
        return self.services.email

    @property
    def storage(self) -> Any:
        return self.services.storage

    @property
    def auth(self) -> Any:
        return self.services.auth

    @property
    def settings(self) -> dict[str, Any]:
        return self.services.settings

    @property
    def app_dir(self) -> Path:
        return self.services.app_dir

    def now(self) -> float:
        return self.services.clock()

    async def call(self, service: str, inputs: dict[str, Any]) -> Any:
        """Run another flow of the app with ``inputs`` as its ``params.body``; return its answer.

        The callee sees only its inputs, ``env``, and the request's ``session``/``user`` —
        none of the caller's node results. An error answer becomes a ``FlowError``.
        """
        from flowengine.errors import FlowError
        from flowengine.interpreter import DEFAULT_STEP_LIMIT, run_flow
        from flowengine.types import Reply

        limits = self.settings.get("limits") or {}
        depth = limits.get("call_depth", DEFAULT_CALL_DEPTH)
        if self.depth + 1 > depth:
            raise FlowError("call_depth_exceeded", f"Sub-flow calls nested deeper than {depth}", status=500)
        flow = self.services.flows[service]
        declared = flow.input_models.get("body")
        if declared is not None:
            inputs = declared.validate_input(inputs)  # the callee's declared inputs hold for calls too
        scope = {
            "params": {"body": inputs, "query": {}, "path": {}, "headers": {}},
            "session": self.scope.get("session"),
            "user": self.scope.get("user"),
            "env": self.scope.get("env"),
        }
        steps = limits.get("steps", DEFAULT_STEP_LIMIT)
        result = await run_flow(flow, self.services, scope, depth=self.depth + 1, step_limit=steps)
        if not isinstance(result, Reply):
            return result
        if result.status < 400:
            return result.body
        errors = (result.body or {}).get("errors") or [{}]
        first = errors[0]
        raise FlowError(
            first.get("code", "call_failed"),
            first.get("message", f"'{service}' failed"),
            status=result.status,
            details=first.get("details"),
        )

    def log(self, message: str, level: int = logging.INFO, **fields: Any) -> None:
        """Log with the flow and node attached."""
        log.log(level, "%s [%s/%s]", message, self.flow, self.node, extra={"fields": fields})
