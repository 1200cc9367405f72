"""Adapters for `bench/bench_tasks.py`: Anchor's task engine and its peers behind one interface.

Each module defines one `Adapter` subclass; `load(name)` imports it lazily, so a missing or
broken system becomes a skipped column instead of stopping the run.
"""

from __future__ import annotations

import importlib

from .base import Adapter, EngineNotReady

#: Column order of the report: system name -> (module, class).
SYSTEMS: dict[str, tuple[str, str]] = {
    "anchor": ("anchor_adapter", "AnchorAdapter"),
    "pgqueuer": ("pgqueuer_adapter", "PgQueuerAdapter"),
    "procrastinate": ("procrastinate_adapter", "ProcrastinateAdapter"),
    "bare-sql": ("bare_sql", "BareSql"),
}


def load(name: str) -> Adapter:
    """Import and instantiate the adapter for `name`; EngineNotReady if it cannot be built."""
    module_name, class_name = SYSTEMS[name]
    try:
        module = importlib.import_module(f".{module_name}", __name__)
    except EngineNotReady:
        raise
    except ImportError as exc:
        raise EngineNotReady(f"cannot import {module_name}: {exc}") from exc
    adapter: Adapter = getattr(module, class_name)()
    return adapter


__all__ = ["SYSTEMS", "Adapter", "EngineNotReady", "load"]
