"""The JSON a flow answers with.

A flow's answer is data, except for one thing it may carry by design: a hidden field
(encrypted or secret) read sealed (``find-one`` with ``encrypted: true``, for ``ECOMPARE`` or
``totp-verify``). It is written as ``null``, so returning such an object can never show or
fail on a hash or a secret.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import JSONResponse

from flowengine.models import Sealed


def _sealed(value: Any) -> None:
    if isinstance(value, Sealed):
        return None
    raise TypeError(f"{type(value).__name__} is not JSON")


class FlowJSON(JSONResponse):
    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=_sealed).encode()
