"""Your service. Start reading at `app.py` (composition root) and `handlers.py` (HTTP handlers).

- `api/v1.yaml`, `sql/` (outside this package): the definitions you write.
- `gen/`: generated from them by `make gen`; never edit it by hand.
- `anchor/`: the vendored Anchor runtime; yours to read and change.
"""
