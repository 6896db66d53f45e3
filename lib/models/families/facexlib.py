"""The facexlib family: the face detector and face parser that face restoration needs.

They are loaded by facexlib itself (inside the face family's helper), from the files
:func:`retouch.lib.models.fetch.resolve` provides; no op runs them on their own.
"""

from __future__ import annotations

from typing import Any

from retouch.lib.errors import ModelError
from retouch.lib.models.families import Family, Loaded


class FacexlibFamily(Family):
    name = "facexlib"
    purposes = ("helper",)
    description = "Face detection and parsing used by the face restoration models"

    def load(self, spec: Any, *, device: str, dtype: str, **options: Any) -> Loaded:
        raise ModelError(
            f"model {spec.name!r} is a helper of the face restoration models; "
            "it is loaded with them, not on its own"
        )


FAMILY = FacexlibFamily()
