"""The ``flowengine`` command: serve, check, run, test, routes, graph, outbox, migrate, schema.

Failures print ``Error: ...`` on stderr and exit 1; a wrong command line exits 2.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from flowengine.errors import FlowError, SpecErrors

#: Open connections a server process takes before answering 503 (``limits.connections``).
DEFAULT_CONNECTIONS = 2048


class CommandError(Exception):
    """A failure to report as ``Error: ...`` with exit status 1."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.command(args) or 0
    except SpecErrors as exc:
        print_problems(exc)
        return 1
    except CommandError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def print_problems(exc: SpecErrors, file: Any = None) -> None:
    """Every load problem on its own ``file:line:col`` line, then the count (``flowengine check``'s format)."""
    file = file or sys.stderr
    for error in exc.errors:
        print(error, file=file)
    noun = "problem" if len(exc.errors) == 1 else "problems"
    print(f"Error: {len(exc.errors)} {noun} found", file=file, flush=True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flowengine", description="A low-code backend runtime.")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    serve = _command(commands, "serve", cmd_serve, "serve an app over HTTP")
    serve.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    serve.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    serve.add_argument("--workers", type=int, default=1, help="server processes (needs shared Redis/PostgreSQL)")
    serve.add_argument("--reload", action="store_true", help="reload when the app's files change (implies --dev)")
    serve.add_argument("--dev", action="store_true", default=os.environ.get("FLOWENGINE_DEV") == "1",
                       help="dev mode: /_dev/outbox and /_dev/flows are readable")  # fmt: skip

    _command(commands, "check", cmd_check, "check an app and list every problem")
    test = _command(commands, "test", cmd_test, "run the app's flow tests (flows/tests/*.yaml) and report each case")
    test.add_argument("-k", dest="select", metavar="TEXT", help="only the cases whose name contains TEXT")
    _command(commands, "routes", cmd_routes, "list the app's HTTP routes")

    run = _command(commands, "run", cmd_run, "run one flow in-process and print its result and trace", app_dir=False)
    run.add_argument("flow", help="the service name")
    _app_dir(run)
    run.add_argument("--query", action="append", default=[], metavar="K=V", help="a query parameter (repeatable)")
    run.add_argument("--path", action="append", default=[], metavar="K=V", help="a path parameter (repeatable)")
    run.add_argument("--body", help="the JSON body")

    graph = _command(commands, "graph", cmd_graph, "draw a flow as a Mermaid (or Graphviz) diagram", app_dir=False)
    graph.add_argument("flow", help="the service name")
    _app_dir(graph)
    graph.add_argument("--format", choices=["mermaid", "dot"], default="mermaid")

    _command(commands, "outbox", cmd_outbox, "print the SMS and email outbox, newest first")

    migrate = _command(commands, "migrate", cmd_migrate, "show or apply changes to the database tables")
    migrate.add_argument("--plan", action="store_true", help="only show what would change")

    schema = _command(commands, "schema", cmd_schema, "print a JSON Schema for editors (app, model, flow or test)", app_dir=False)
    schema.add_argument("name", choices=["app", "model", "flow", "test"])
    schema.add_argument("app_dir", nargs="?", metavar="APP_DIR",
                        help="the app whose own node types the flow schema adds (default: . if it has an app.yaml)")  # fmt: skip
    return parser


def _command(commands: Any, name: str, handler: Any, help: str, app_dir: bool = True) -> argparse.ArgumentParser:
    parser = commands.add_parser(name, help=help, description=help)
    if app_dir:
        _app_dir(parser)
    parser.set_defaults(command=handler)
    return parser


def _app_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("app_dir", nargs="?", default=".", metavar="APP_DIR", help="the app folder (default: .)")


def _load(args: argparse.Namespace) -> Any:
    from flowengine.spec.app import load_app

    if not Path(args.app_dir).is_dir():
        raise CommandError(f"{args.app_dir} is not a folder")
    return load_app(args.app_dir)


def _flow(app: Any, name: str) -> Any:
    if name not in app.flows:
        import difflib

        close = difflib.get_close_matches(name, list(app.flows), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise CommandError(f"no flow named '{name}'{hint}; flows: {', '.join(sorted(app.flows))}")
    return app.flows[name]


# --- commands ---------------------------------------------------------------------------


def cmd_check(args: argparse.Namespace) -> int:
    app = _load(args)
    endpoints = sum(len(flow.endpoints) for flow in app.flows.values())
    print(f"ok: {len(app.flows)} flows, {endpoints} endpoints, {len(app.models)} models")
    return 0


def cmd_test(args: argparse.Namespace) -> int:
    from flowengine.testing import load_suite, run_suite

    if not Path(args.app_dir).is_dir():
        raise CommandError(f"{args.app_dir} is not a folder")
    suite = load_suite(args.app_dir)
    return 0 if asyncio.run(run_suite(suite, sys.stdout, args.select)) else 1


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    if args.reload:
        return _serve_reloading(args)
    app = _load(args)  # report every problem before starting anything
    os.environ["FLOWENGINE_APP_DIR"] = str(Path(args.app_dir).resolve())
    os.environ["FLOWENGINE_DEV"] = "1" if args.dev else "0"
    uvicorn.run(
        "flowengine.runtime:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        **_server_limits(app.settings),
    )
    return 0


def _server_limits(settings: dict[str, Any]) -> dict[str, Any]:
    """uvicorn's own limits: beyond ``limits.connections`` open connections a worker answers
    503 at once instead of taking on more than it can serve (uvicorn's default is no limit)."""
    limits = settings.get("limits") or {}
    return {"limit_concurrency": limits.get("connections", DEFAULT_CONNECTIONS), "timeout_keep_alive": 5}


def _serve_reloading(args: argparse.Namespace) -> int:
    """One process whose app is swapped in place on every good edit (``flowengine.reload``)."""
    import uvicorn

    from flowengine.reload import Reloader
    from flowengine.runtime import configure_logging

    if not Path(args.app_dir).is_dir():
        raise CommandError(f"{args.app_dir} is not a folder")
    if args.workers != 1:
        raise CommandError("--reload serves from one process; drop --workers")
    configure_logging()
    reloader = Reloader(args.app_dir, dev=True)
    uvicorn.run(reloader, host=args.host, port=args.port, **_server_limits(reloader.current.app.settings))
    return 0


def cmd_routes(args: argparse.Namespace) -> int:
    app = _load(args)
    rows = [
        (endpoint.method, endpoint.path, endpoint.session, flow.name, flow.file)
        for flow in app.flows.values()
        for endpoint in flow.endpoints
    ]
    _table(["METHOD", "PATH", "SESSION", "SERVICE", "FILE"], sorted(rows, key=lambda r: (r[1], r[0])))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from flowengine.http.inputs import Inputs
    from flowengine.interpreter import run_flow
    from flowengine.runtime import open_services
    from flowengine.types import Reply

    app = _load(args)
    flow = _flow(app, args.flow)
    try:
        body = json.loads(args.body) if args.body else None
    except ValueError as exc:
        raise CommandError(f"--body is not valid JSON: {exc}") from None
    params = {"query": _pairs(args.query), "path": _pairs(args.path), "headers": {}, "client": {"ip": "127.0.0.1"}, "body": body}

    async def go() -> Any:
        services = open_services(app)
        starter = getattr(services.store, "start", None)
        if starter is not None:
            await starter()
        try:
            Inputs(flow.input_models).validate(params)
            scope = {"params": params, "session": None, "user": None, "env": app.settings.get("env", {})}
            return await run_flow(flow, services, scope)
        finally:
            await services.close()

    failed = False
    try:
        result = asyncio.run(go())
    except FlowError as exc:
        result, failed = Reply(exc.status, exc.body()), True
    status, body = (result.status, result.body) if isinstance(result, Reply) else (200, result)
    print(f"status: {status}")
    print(json.dumps(body, indent=2, ensure_ascii=False))
    trace = flow.traces[-1] if flow.traces else None
    if trace is not None:
        print()
        _table(["NODE", "TYPE", "OUTPUT", "µs", "ERROR"],
               [(s.node, s.type, s.output or "(end)", str(s.micros), s.error or "") for s in trace.steps])  # fmt: skip
    return 1 if failed or status >= 500 else 0


def cmd_graph(args: argparse.Namespace) -> int:
    from flowengine.drawing import dot, mermaid

    app = _load(args)
    flow = _flow(app, args.flow)
    print(mermaid(flow) if args.format == "mermaid" else dot(flow))
    return 0


def cmd_outbox(args: argparse.Namespace) -> int:
    from flowengine.messaging.outbox import messages
    from flowengine.runtime import open_services

    app = _load(args)

    async def read() -> list[dict[str, Any]]:
        services = open_services(app)
        try:
            return await messages(services.cache)
        finally:
            await services.close()

    found = asyncio.run(read())
    if not found:
        print("the outbox is empty (an in-process cache only keeps messages while the server runs; set REDIS_URL to share them)")
    for message in found:
        print(json.dumps(message, ensure_ascii=False))
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from flowengine.runtime import open_services

    app = _load(args)
    services = open_services(app)
    if services.store is None:
        print("the app has no stored models")
        return 0

    async def go() -> list[str]:
        try:
            return await (services.store.plan() if args.plan else services.store.migrate())
        finally:
            await services.close()

    changes = asyncio.run(go())
    print("\n".join(changes) if changes else "no changes")
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from flowengine.spec.schema import editor_schema

    if args.app_dir is not None and not Path(args.app_dir).is_dir():
        raise CommandError(f"{args.app_dir} is not a folder")
    if args.name == "test":  # flows/tests/*.yaml
        from flowengine.testing import FILE_SCHEMA

        print(json.dumps(FILE_SCHEMA, indent=2))
        return 0
    registry = _app_registry(args.app_dir) if args.name == "flow" else None
    print(json.dumps(editor_schema(args.name, registry), indent=2))
    return 0


def _app_registry(app_dir: str | None) -> Any:
    """The node types of the app in ``app_dir``, else of the one in ``.``; None: no app, installed types only."""
    from flowengine.spec.app import load_registry

    if app_dir is None and not Path("app.yaml").is_file():
        return None
    return load_registry(app_dir or ".")


# --- helpers ----------------------------------------------------------------------------


def _pairs(items: list[str]) -> dict[str, str]:
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise CommandError(f"expected K=V, got {item!r}")
        pairs[key] = value
    return pairs


def _table(headers: list[str], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(str(x)) for x in column) for column in zip(headers, *rows)]
    for row in [headers, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())


if __name__ == "__main__":
    sys.exit(main())
