"""The built-in node library.

Each module registers its node types with ``@node_type`` from ``flowengine.registry``,
exactly as a third-party package does; this package is itself published through the
``flowengine.nodes`` entry point, so built-ins take the same path as everyone else's.
"""

from flowengine_nodes import auth, cache, data, flow, limits, messaging, otp, responses, storage, subflows, totp  # noqa: F401
