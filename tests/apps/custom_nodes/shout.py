"""An app's own node module: listed in app.yaml's ``node_modules``, found in the app folder."""

from flowengine.registry import Param, node_type


@node_type(
    "shout",
    params={"text": Param.template(required=True, description="the text to shout")},
    description="Upper-case a text; the node's result is the loud text.",
)
async def shout(ctx, params):
    return "next", params["text"].upper()
