"""The vendored Anchor runtime: database, migrations, embedded PostgreSQL, server, CLI, codegen.

This code came from the Anchor template and belongs to you now: read it, change it.
`copier update` merges later framework improvements with your edits (see the README).
Nothing in here imports your application code or the generated code in `gen/`.
"""
