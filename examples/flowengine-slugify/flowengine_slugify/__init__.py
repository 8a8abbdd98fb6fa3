"""flowengine-slugify: a ``slugify`` node type, shipped as a package.

Installed with pip, it registers through the ``flowengine.nodes`` entry point, so every app
in the environment can write ``type: slugify``.
"""

from __future__ import annotations

import re
import unicodedata

from flowengine.errors import FlowError
from flowengine.registry import Param, node_type

_NOT_LETTERS_OR_DIGITS = re.compile(r"[^a-z0-9]+")


@node_type(
    "slugify",
    params={
        "text": Param.template(required=True, description="the text to make a slug of"),
        "separator": Param.literal({"enum": ["-", "_", "."]}, default="-"),
        "max_length": Param.literal({"type": "integer", "minimum": 1, "maximum": 200}, default=80),
        "unique": Param.literal({"type": "boolean"}, default=False,
                                description="number repeats: hello-world, hello-world-2, ..."),
    },
    outputs=("next",),
    description="Turn a text into a URL slug: 'Héllo, Wörld!' becomes 'hello-world'.",
)
async def slugify(ctx, params):
    """Lower-case ASCII letters and digits joined by the separator; fails when none are left."""
    separator = params["separator"]
    ascii_text = unicodedata.normalize("NFKD", params["text"]).encode("ascii", "ignore").decode()
    slug = _NOT_LETTERS_OR_DIGITS.sub(separator, ascii_text.lower()).strip(separator)
    slug = slug[: params["max_length"]].rstrip(separator)
    if not slug:
        raise FlowError("empty_slug", f"'{params['text']}' has no letters or digits", status=400)
    if params["unique"]:  # the app's cache counts each slug, across every server process
        seen = await ctx.cache.increment(f"slugify:{slug}")
        slug = slug if seen == 1 else f"{slug}{separator}{seen}"
    return "next", slug
