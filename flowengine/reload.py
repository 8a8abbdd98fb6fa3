"""Hot reload: serve an app folder, and swap in a new build of it whenever its files change.

``Reloader`` is an ASGI app holding the current build (the Starlette app of one load of the
folder, on its services) and handing every request to it. A change under the folder, seen
by ``watchfiles`` in the server's own event loop, loads and checks the whole app again off
the loop. A good build replaces the current one in a single assignment: a request in flight
finishes on the graphs it started with, the next one runs on the new graphs. A broken edit
changes nothing but the terminal: the problems are printed as ``flowengine check`` prints
them, and the previous build keeps serving.

Services (cache, store, providers) carry over to the new build while ``app.yaml`` keeps the
same settings for them and the models are unchanged; otherwise the new build opens its own,
and the old ones are closed once the last request using them has finished.
"""

from __future__ import annotations

import asyncio
import importlib
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

import anyio
import watchfiles
from starlette.types import ASGIApp, Receive, Scope, Send

from flowengine.cli import print_problems
from flowengine.context import Services
from flowengine.errors import SpecErrors
from flowengine.runtime import assemble, open_services, start_services
from flowengine.spec.app import App, load_app

#: app.yaml keys that open no service: a change to them alone keeps the services.
SERVICE_FREE_KEYS = frozenset({"name", "description", "env", "cors", "limits", "node_modules"})
#: Files whose change means a new build.
WATCHED_SUFFIXES = frozenset({".yaml", ".yml", ".py", ".html"})


@dataclass(eq=False)
class Build:
    """One load of the app folder, served on its services."""

    app: App
    services: Services
    asgi: ASGIApp
    #: The builds that share these services' connections (this one included).
    sharing: list[Build] = field(default_factory=list)
    active: int = 0


class Reloader:
    """An ASGI app that serves the newest good build of ``app_dir``."""

    def __init__(self, app_dir: str | Path, *, dev: bool = True, out: TextIO | None = None) -> None:
        self.app_dir = Path(app_dir).resolve()
        self.dev = dev
        self.out = out or sys.stderr
        app = load_app(self.app_dir)  # a broken app at start-up is the caller's SpecErrors
        self.current = self._build(app, open_services(app), [])
        self._stop: asyncio.Event | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._retiring: set[asyncio.Task[None]] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        build = self.current  # the whole request runs on the build it started on
        build.active += 1
        try:
            await build.asgi(scope, receive, send)
        finally:
            build.active -= 1

    # --- life cycle ---------------------------------------------------------------------

    async def startup(self, watch: bool = True) -> None:
        """Start the services, and watch the folder unless ``watch`` is false (tests reload by hand)."""
        await start_services(self.current.services)
        if watch:
            self._stop = asyncio.Event()
            self._watcher = asyncio.create_task(self._watch(self._stop))

    async def shutdown(self) -> None:
        """Stop watching, let retiring services close, close the current ones."""
        if self._watcher is not None and self._stop is not None:
            self._stop.set()
            await self._watcher
        if self._retiring:
            await asyncio.gather(*self._retiring)
        await self.current.services.close()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        await receive()  # lifespan.startup
        try:
            await self.startup()
        except Exception as exc:
            await send({"type": "lifespan.startup.failed", "message": str(exc)})
            return
        await send({"type": "lifespan.startup.complete"})
        await receive()  # lifespan.shutdown
        await self.shutdown()
        await send({"type": "lifespan.shutdown.complete"})

    async def _watch(self, stop: asyncio.Event) -> None:
        changes = watchfiles.awatch(self.app_dir, watch_filter=_AppFiles(self.app_dir), stop_event=stop, step=50)
        async for _ in changes:
            await self.reload()

    # --- swapping -----------------------------------------------------------------------

    async def reload(self) -> bool:
        """Load and check the folder again; swap builds if it is good, else print why and keep serving."""
        previous = self.current
        try:
            app = await anyio.to_thread.run_sync(self._load, previous.app)
            build = await self._next_build(app, previous)
        except SpecErrors as exc:
            print_problems(exc, self.out)
            self._say("the edit above does not load; still serving the previous version")
            return False
        except Exception as exc:  # a service that does not open, a module that does not import
            self._say(f"Error: {type(exc).__name__}: {exc}; still serving the previous version")
            return False
        self.current = build
        if build.sharing is not previous.sharing:
            self._retire(previous.sharing)
        self._say(f"reloaded: {len(app.flows)} flows")
        return True

    def _load(self, previous: App) -> App:
        """Load the folder, importing the app's own node modules afresh."""
        for name in previous.settings.get("node_modules", []):
            for loaded in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
                if _inside(sys.modules[loaded], self.app_dir):
                    del sys.modules[loaded]
        importlib.invalidate_caches()
        return load_app(self.app_dir)

    async def _next_build(self, app: App, previous: Build) -> Build:
        if _service_settings(app) == _service_settings(previous.app):
            services = replace(previous.services, settings=app.settings, app_dir=app.dir, flows=app.flows)
            return self._build(app, services, previous.sharing)
        services = open_services(app)
        try:
            await start_services(services)
            return self._build(app, services, [])
        except BaseException:
            await services.close()
            raise

    def _build(self, app: App, services: Services, sharing: list[Build]) -> Build:
        build = Build(app, services, assemble(app, services, self.dev), sharing)
        sharing[:] = [*(b for b in sharing if b.active), build]  # idle old builds are gone for good
        return build

    def _retire(self, builds: list[Build]) -> None:
        """Close the services of ``builds`` once none of them serves a request any more."""

        async def close() -> None:
            while any(build.active for build in builds):
                await asyncio.sleep(0.05)
            await builds[0].services.close()

        task = asyncio.create_task(close())
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    def _say(self, message: str) -> None:
        print(f"flowengine: {message}", file=self.out, flush=True)


class _AppFiles(watchfiles.DefaultFilter):
    """The app's own files: YAML, node modules, templates; never its data folder."""

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.data = root / "data"

    def __call__(self, change: watchfiles.Change, path: str) -> bool:
        file = Path(path)
        if file.suffix not in WATCHED_SUFFIXES or file.is_relative_to(self.data):
            return False
        return super().__call__(change, path)


def _service_settings(app: App) -> tuple[Any, ...]:
    """What the services were opened from: app.yaml minus the keys no service reads, and the models."""
    settings = {key: value for key, value in app.settings.items() if key not in SERVICE_FREE_KEYS}
    models = {name: doc.data for name, doc in app.documents.items() if name.startswith("models/")}
    return app.name, settings, models


def _inside(module: Any, folder: Path) -> bool:
    file = getattr(module, "__file__", None)
    return file is not None and Path(file).resolve().is_relative_to(folder)
