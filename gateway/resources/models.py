"""GET /v1/models and GET /v1/models/{id}: every model and alias the box serves."""

from __future__ import annotations

import json
import time
from typing import Any

import falcon

from gateway.routing import Router


class _Catalog:
    def __init__(self, router: Router) -> None:
        created = int(time.time())
        self.entries: dict[str, dict[str, Any]] = {}
        for name, resolves_to in router.public_ids():
            owner = router.resolve(name).owned_by
            entry: dict[str, Any] = {"id": name, "object": "model", "created": created, "owned_by": owner}
            if resolves_to != name:
                entry["root"] = resolves_to
            self.entries[name] = entry


class ModelsResource:
    def __init__(self, router: Router) -> None:
        catalog = _Catalog(router)
        self._body = json.dumps({"object": "list", "data": list(catalog.entries.values())}).encode()

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.data = self._body
        resp.content_type = falcon.MEDIA_JSON


class ModelResource:
    def __init__(self, router: Router) -> None:
        self._router = router
        self._catalog = _Catalog(router)

    def on_get(self, req: falcon.Request, resp: falcon.Response, model_id: str) -> None:
        entry = self._catalog.entries.get(model_id)
        if entry is None:
            self._router.resolve(model_id)  # raises the 404 that lists what exists
        resp.data = json.dumps(entry).encode()
        resp.content_type = falcon.MEDIA_JSON
