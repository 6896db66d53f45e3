"""Serve the enhance flow as a deployment from this process (a single box, needs a Prefect server).

    PREFECT_API_URL=http://127.0.0.1:4200/api python -m retouch.deployments.serve

Runs started from the Prefect UI get the recipe as a form (the flow's parameters are
pydantic models).
"""

from __future__ import annotations

from retouch.flows.enhance import enhance


def main() -> None:
    enhance.serve(
        name="enhance",
        tags=["retouch"],
        description="Batch-enhance a folder, bucket prefix, list or ZIP",
    )


if __name__ == "__main__":
    main()
