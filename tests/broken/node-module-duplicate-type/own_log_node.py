"""A node module that declares a type the built-in library already has."""

from flowengine.registry import Param, node_type


@node_type("log", params={"message": Param.template(required=True)})
async def log(ctx, params):
    return "next", params["message"]
