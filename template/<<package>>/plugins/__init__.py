"""This app's plugins: one folder each, with its own definitions and code.

A plugin folder may hold `api.yaml` (served under /api/plugins/<name>) and `tasks.yaml`, which
`make gen` turns into `<name>/gen/` just like the app's, and `migrations/` (applied after the
app's, tracked in their own table). The plugin object (see `anchor.plugins.Plugin`) ties them
together; list it in `app.py`'s `plugins()`.
"""
