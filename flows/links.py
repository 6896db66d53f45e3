"""Where a person can see the current flow run: its page in the Prefect UI, when the server
has one (an embedded server for one command-line run has no UI to visit: None)."""

from __future__ import annotations


def flow_run_id() -> str | None:
    """The id of the flow run this code runs in (None outside a flow run)."""
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    return str(ctx.flow_run.id) if ctx is not None and ctx.flow_run is not None else None


def flow_run_url(run_id: str | None = None) -> str | None:
    """The Prefect UI page of flow run ``run_id`` (default: the current one), or None when
    no UI address is known (``PREFECT_UI_URL``, or derived from ``PREFECT_API_URL``)."""
    from prefect.settings import get_current_settings
    from prefect.utilities.urls import url_for

    run_id = run_id or flow_run_id()
    if run_id is None or not get_current_settings().ui_url:
        return None
    return url_for("flow-run", obj_id=run_id)
