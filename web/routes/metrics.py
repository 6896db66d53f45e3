"""``GET /metrics``: the Prometheus text format of the batches this server ran.

It asks for the token like the API does (``Authorization: Bearer``, which Prometheus sends
with ``authorization: {credentials: ...}`` in its scrape config): without a token the server
answers only this machine anyway (the loopback rule), and with one it listens beyond it, where
batch counts, presets and memory figures are nobody else's business. Not in the OpenAPI
schema: it is for scrapers, not API clients.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from retouch.web.deps import RunnerDep, require_token

router = APIRouter(dependencies=[Depends(require_token)])


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request, runner: RunnerDep) -> Response:
    body, content_type = runner.metrics.exposition(request.headers.get("accept"))
    return Response(body, headers={"content-type": content_type})
