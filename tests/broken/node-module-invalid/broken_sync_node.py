"""A node module whose type is declared wrongly: run is not async."""

from flowengine.registry import Param, node_type


@node_type("whisper", params={"text": Param.expression(required=True)})
def whisper(ctx, params):
    return "next", str(params["text"]).lower()
