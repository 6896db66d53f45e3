"""Serve the enhance and regenerate flows as deployments from this process (a single box,
needs a Prefect server).

    PREFECT_API_URL=http://127.0.0.1:4200/api python -m retouch.deployments.serve

Runs started from the Prefect UI get their parameters as forms (the flows' parameters are
pydantic models: the recipe for ``enhance``, ``RegenerateOptions`` for ``regenerate``).
"""

from __future__ import annotations

from typing import Any

from prefect import serve

from retouch.flows.enhance import enhance
from retouch.flows.regenerate import regenerate


def deployments() -> list[Any]:
    """The deployments this module serves (also used by tests to check their parameters)."""
    return [
        enhance.to_deployment(
            name="enhance",
            tags=["retouch"],
            description="Batch-enhance a folder, bucket prefix, list or ZIP",
        ),
        regenerate.to_deployment(
            name="regenerate",
            tags=["retouch"],
            description="Re-process selected images of an earlier run (recipe plus overrides), "
            "record new versions and re-deliver the run",
        ),
    ]


def main() -> None:
    serve(*deployments())


if __name__ == "__main__":
    main()
