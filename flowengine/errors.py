"""The two kinds of error flowengine speaks.

``FlowError`` is an error a request can answer with: it carries the HTTP status and the
Altogic error item (``origin``, ``code``, ``message``, ``details``). Nodes raise it; the
interpreter routes it to the node's ``error`` output when one is wired.

``SpecError`` is a problem in an app's YAML found while loading it: it carries the file,
line and column, the node it is about, and what was expected. Loading collects all of them
and raises ``SpecErrors`` once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class FlowError(Exception):
    """An error with an HTTP status and the Altogic error shape."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        status: int = 500,
        details: Any = None,
        origin: str | None = None,
        retryable: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.details = details
        self.origin = origin or ("client_error" if status < 500 else "server_error")
        #: Whether trying again may succeed (a node's ``retry`` only retries these). Server
        #: errors may pass; a client error, or a provider refusing for good, will not.
        self.retryable = status >= 500 if retryable is None else retryable

    def item(self) -> dict[str, Any]:
        """The error as one entry of ``{"errors": [...]}``."""
        entry: dict[str, Any] = {"origin": self.origin, "code": self.code, "message": self.message}
        if self.details is not None:
            entry["details"] = self.details
        return entry

    def body(self) -> dict[str, Any]:
        return {"errors": [self.item()]}

    def __repr__(self) -> str:
        return f"FlowError({self.code!r}, {self.message!r}, status={self.status})"


class ValidationFailed(FlowError):
    """A 400 carrying one error item per bad field."""

    def __init__(self, items: list[dict[str, Any]]) -> None:
        super().__init__("validation_error", items[0]["message"], status=400)
        self.items = items

    def body(self) -> dict[str, Any]:
        return {"errors": self.items}


@dataclass(frozen=True)
class Location:
    """Where something sits in an app's files (1-based line and column)."""

    file: str
    line: int = 0
    column: int = 0

    def __str__(self) -> str:
        if not self.line:
            return self.file
        return f"{self.file}:{self.line}:{self.column}"


@dataclass(frozen=True)
class SpecError:
    """One problem in an app's YAML."""

    where: Location
    message: str
    node: str | None = None

    def __str__(self) -> str:
        about = f"node '{self.node}': " if self.node else ""
        return f"{self.where}: {about}{self.message}"


@dataclass
class SpecErrors(Exception):
    """Every problem found while loading an app, reported at once."""

    errors: list[SpecError] = field(default_factory=list)

    def __str__(self) -> str:
        return "\n".join(str(error) for error in self.errors)
