"""sqlc -> asyncpg: turn the JSON that `sqlc generate` writes into the typed `gen/db` package.

The project's sqlc.yaml uses sqlc's built-in `json` output; `render_queries` reads that
`codegen_request.json` and returns the Python modules (models, one module of query methods
per query file, and a `Queries` class combining them).
"""

from .render import render_queries

__all__ = ["render_queries"]
