"""Composition root: build each runtime piece once and hand it to the code that needs it.

No globals: tests call `create_app(settings)` with their own settings (and can pass other
pieces the same way). `python -m <package> serve` calls `create_app()`.
"""

from __future__ import annotations

from fastapi import FastAPI

from .anchor.db import Database
from .anchor.server import create_server
from .anchor.settings import load_settings
from .gen.api import build_router
from .gen.db import Queries, register_codecs
from .handlers import Handlers
from .settings import AppSettings


def create_app(settings: AppSettings | None = None) -> FastAPI:
    settings = settings or load_settings(AppSettings)
    db = Database(
        settings.database_url,
        min_size=settings.db_pool_min_size,
        max_size=settings.db_pool_max_size,
        init=register_codecs,  # json/jsonb as Python values on every connection
    )
    app = create_server(settings, db=db, title=settings.app_title, version="1.0.0")
    app.include_router(build_router(Handlers(db=db, queries=Queries(db))))
    return app
