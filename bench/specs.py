"""Synthetic definitions for the `make gen` timing: many operations and queries."""

from __future__ import annotations

from pathlib import Path

TABLES = 10


def write_large_definitions(project: Path, *, operations: int, queries: int) -> None:
    (project / "sql" / "migrations" / "0002_bench.up.sql").write_text(
        "\n".join(
            f"CREATE TABLE item_{t} (id bigserial PRIMARY KEY, name text NOT NULL, note text, "
            f"amount numeric(12, 2) NOT NULL DEFAULT 0, tags text[] NOT NULL DEFAULT '{{}}', "
            f"data jsonb, created_at timestamptz NOT NULL DEFAULT now());"
            for t in range(TABLES)
        )
        + "\n"
    )
    kinds = [
        ("Get{T}{i} :one", "SELECT * FROM item_{t} WHERE id = $1;"),
        (
            "List{T}{i} :many",
            (
                "SELECT id, name, amount FROM item_{t} WHERE name LIKE sqlc.arg(pattern) "
                "ORDER BY id LIMIT sqlc.arg(max_rows);"
            ),
        ),
        (
            "Create{T}{i} :one",
            (
                "INSERT INTO item_{t} (name, note, tags, data) VALUES ($1, sqlc.narg(note), $2, $3) "
                "RETURNING *;"
            ),
        ),
        ("Delete{T}{i} :execrows", "DELETE FROM item_{t} WHERE id = ANY(sqlc.arg(ids)::bigint[]);"),
    ]
    lines = []
    for i in range(queries):
        name, sql = kinds[i % len(kinds)]
        t = i % TABLES
        lines.append(f"-- name: {name.format(T='Item', i=i, t=t)}\n{sql.format(t=t)}\n")
    (project / "sql" / "queries" / "bench.sql").write_text("\n".join(lines))

    paths = []
    for i in range(operations // 2):
        paths.append(f"""  /api/v1/things{i}:
    get:
      operationId: listThings{i}
      parameters:
        - {{name: limit, in: query, schema: {{type: integer, default: 20}}}}
        - {{name: q, in: query, schema: {{type: string}}}}
      responses:
        "200":
          description: ok
          content:
            application/json:
              schema: {{type: array, items: {{$ref: "#/components/schemas/Thing"}}}}
  /api/v1/things{i}/{{thingId}}:
    put:
      operationId: updateThing{i}
      parameters:
        - {{name: thingId, in: path, required: true, schema: {{type: integer}}}}
      requestBody:
        required: true
        content:
          application/json:
            schema: {{$ref: "#/components/schemas/ThingInput"}}
      responses:
        "200":
          description: ok
          content:
            application/json:
              schema: {{$ref: "#/components/schemas/Thing"}}
        "404": {{description: not found}}
""")
    spec = (project / "api" / "v1.yaml").read_text()
    spec = spec.replace("paths:\n", "paths:\n" + "".join(paths), 1)
    schemas = "\n  schemas:\n"  # components/schemas, after securitySchemes if there are any
    assert schemas in spec, "api/v1.yaml has no components/schemas"
    spec = spec.replace(
        schemas,
        """
  schemas:
    Thing:
      type: object
      required: [id, name]
      properties:
        id: {type: integer, format: int64}
        name: {type: string}
        tags: {type: array, items: {type: string}}
    ThingInput:
      type: object
      required: [name]
      properties:
        name: {type: string, minLength: 1}
        tags: {type: array, items: {type: string}}
""",
        1,
    )
    (project / "api" / "v1.yaml").write_text(spec)
