"""The few shapes that travel through the whole engine."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Mapping

#: The names an expression can see during a run: ``params``, ``session``, ``user``, ``env``
#: and the result of every node that has already run, under its id.
Scope = dict[str, Any]

#: What a node's ``run`` returns: the name of the output to follow and the node's result.
#: An output of ``None`` ends the run with the result (a ``Reply`` for an endpoint).
NodeResult = tuple["str | None", Any]

#: A node type's function: ``async def run(ctx, params) -> (output, value)``.
NodeFunction = Callable[[Any, Mapping[str, Any]], Awaitable[NodeResult]]


@dataclass(frozen=True, slots=True)
class Reply:
    """What an endpoint answers: a status, a JSON body and extra headers."""

    status: int = 200
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
