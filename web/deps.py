"""What the routes share, as FastAPI dependencies: the token check, the runner and the
settings. The runner and the token live on ``app.state`` (set by
:func:`retouch.web.app.create_app`); the settings are read per request, so a reload takes
effect at once."""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Query, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from retouch.lib.settings import Settings, get_settings
from retouch.web.batches import Batch
from retouch.web.runner import Runner

bearer = HTTPBearer(auto_error=False, description="RETOUCH_WEB_TOKEN, when one is set")


def require_token(
    request: Request,
    credentials: HTTPAuthorizationCredentials | None = Security(bearer),
    token_param: str | None = Query(
        None, alias="token", description="The token, for links and <img> (instead of a header)"
    ),
) -> None:
    token: str | None = request.app.state.token
    if not token:
        return
    given = credentials.credentials if credentials else token_param
    if not given or not hmac.compare_digest(given.encode(), token.encode()):
        raise HTTPException(
            401,
            "a token is required: send 'Authorization: Bearer TOKEN' or ?token=TOKEN",
            headers={"WWW-Authenticate": "Bearer"},
        )


def get_runner(request: Request) -> Runner:
    runner: Runner = request.app.state.runner
    return runner


RunnerDep = Annotated[Runner, Depends(get_runner)]
SettingsDep = Annotated[Settings, Depends(get_settings)]


def batch_or_404(runner: Runner, batch_id: str) -> Batch:
    batch = runner.get(batch_id)
    if batch is None:
        raise HTTPException(404, f"no batch {batch_id!r}")
    return batch


def snapshot(runner: Runner, batch_id: str) -> dict[str, Any]:
    """The batch as ``BatchOut`` shows it, or 404."""
    data = runner.snapshot(batch_id)
    if data is None:
        raise HTTPException(404, f"no batch {batch_id!r}")
    return data
