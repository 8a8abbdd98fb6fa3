"""Putting an app together: load it, open its services, build the ASGI app.

The embedded defaults need nothing installed: an in-process cache, outboxes for SMS and
email, SQLite under the app's ``data/`` folder, files under ``data/files/``. Production
services are chosen by settings alone (``REDIS_URL``, ``DATABASE_URL``, ``STORAGE_URL``,
Twilio and SMTP credentials through ``${VAR}``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from pathlib import Path
from typing import Any, AsyncIterator

from starlette.applications import Starlette

from flowengine.context import Services
from flowengine.spec.app import App, load_app

log = logging.getLogger("flowengine")

APP_DIR_VARIABLE = "FLOWENGINE_APP_DIR"
DEV_VARIABLE = "FLOWENGINE_DEV"


def open_services(app: App, data_dir: Path | None = None) -> Services:
    """The services ``app.yaml`` asks for (each optional module only when present).

    ``data_dir`` is where an embedded SQLite store lives (default: the app's ``data/``).
    """
    from flowengine.cache import open_cache
    from flowengine.messaging.email import open_email
    from flowengine.messaging.sms import open_sms
    from flowengine.storage.service import open_storage

    settings = app.settings
    cache = open_cache((settings.get("cache") or {}).get("url") or None, app.name)
    services = Services(cache=cache, settings=settings, app_dir=app.dir)
    if settings.get("secret"):
        services.secret = settings["secret"].encode()
    elif (settings.get("cache") or {}).get("url"):
        log.warning("app.yaml has no secret: each server process signs codes with its own key; set secret: ${APP_SECRET}")
    services.sms = open_sms(settings.get("sms"), cache)
    services.email = open_email(settings.get("email"), cache)
    services.store = _open_store(app, data_dir or app.dir / "data")
    services.storage = open_storage(settings.get("storage"), (data_dir or app.dir / "data") / "files")
    services.flows = app.flows
    if app.auth is not None:
        from flowengine.auth.service import AuthService

        services.auth = AuthService(app.auth, services, app.name)
    return services


def _open_store(app: App, data_dir: Path) -> Any:
    if not app.models:
        return None
    from flowengine.store import open_store

    models = {**app.models, **(app.auth.models if app.auth is not None else {})}  # auth's own: _sessions
    return open_store((app.settings.get("database") or {}).get("url") or None, models, data_dir)


def build(app_dir: str | Path, dev: bool = False) -> Starlette:
    """Load ``app_dir`` and return its ASGI app, with services started and stopped by its lifespan."""
    app = load_app(app_dir)
    services = open_services(app)
    asgi = assemble(app, services, dev)
    asgi.router.lifespan_context = lifespan(services)
    return asgi


def assemble(app: App, services: Services, dev: bool = False) -> Starlette:
    """The ASGI app of a loaded app on open services; whoever opened the services starts and closes them."""
    from flowengine.http.app import build_app

    return build_app(app, services, dev=dev, extra_routes=_service_routes(app, services, dev))


async def start_services(services: Services) -> None:
    """Make the services ready to serve (the store creates or migrates its tables)."""
    for service in (services.cache, services.store):
        starter = getattr(service, "start", None)
        if starter is not None:
            await starter()
    if services.auth is not None:
        await services.auth.start()


def _service_routes(app: App, services: Services, dev: bool) -> list:
    """Routes that belong to services (the Altogic auth, cache and storage APIs, the dev outbox)."""
    from flowengine.http.cache_api import cache_routes
    from flowengine.http.guards import api_guard

    routes: list = cache_routes(services.cache, api_guard(app, services))
    if app.auth is not None and services.auth is not None:
        from flowengine.http.auth_api import auth_routes

        routes.extend(auth_routes(services.auth, app.settings.get("api_keys") or ()))
    if services.store is not None:
        from flowengine.http.data_api import data_routes

        routes.extend(data_routes(app, services))
    if services.storage is not None:
        from flowengine.http.storage_api import storage_routes

        routes.extend(storage_routes(services.storage, services))
    if dev:
        from flowengine.http.outbox import outbox_routes

        routes.extend(outbox_routes(services.cache))
    return routes


def lifespan(services: Services):
    """An ASGI lifespan that starts ``services`` and closes them at shutdown."""

    @contextlib.asynccontextmanager
    async def span(_: Starlette) -> AsyncIterator[None]:
        await start_services(services)
        try:
            yield
        finally:
            await services.close()

    return span


def create_app() -> Starlette:
    """Uvicorn factory (``--workers``/``--reload``): the app named by the environment."""
    configure_logging()
    return build(os.environ.get(APP_DIR_VARIABLE, "."), dev=os.environ.get(DEV_VARIABLE) == "1")


class _RedactTokens(logging.Filter):
    """Keep secrets and personal data in query strings out of the access log: the one-time
    tokens of email links (``?key=``) and API keys, and phone numbers, email addresses and
    passwords (the tutorial's set-phone sends ``?phoneNumber=``)."""

    _KEY = re.compile(r"([?&](?i:key|api_?key|token|access_token|phone|phone_?number|e-?mail|password)=)[^&\s\"]+")

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(self._KEY.sub(r"\1[redacted]", a) if isinstance(a, str) else a for a in record.args)
        return True


def configure_logging() -> None:
    """Engine messages (the outbox, crashes with their error ids) on stderr, tokens redacted."""
    engine = logging.getLogger("flowengine")
    if not engine.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(name)s: %(message)s"))
        engine.addHandler(handler)
        engine.setLevel(logging.INFO)
    logging.getLogger("uvicorn.access").addFilter(_RedactTokens())
