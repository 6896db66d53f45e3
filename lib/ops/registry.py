"""The explicit registry of operations: each is listed here once, duplicates are refused."""

from __future__ import annotations

from ..errors import UnknownNameError
from .base import Operation


class OpRegistry:
    def __init__(self) -> None:
        self._ops: dict[str, Operation] = {}

    def add(self, op: Operation) -> Operation:
        if op.id in self._ops:
            raise ValueError(f"operation id {op.id!r} is registered twice")
        self._ops[op.id] = op
        return op

    def get(self, op_id: str) -> Operation:
        try:
            return self._ops[op_id]
        except KeyError:
            raise UnknownNameError("operation", op_id, self._ops) from None

    def __contains__(self, op_id: object) -> bool:
        return op_id in self._ops

    def ids(self) -> list[str]:
        return sorted(self._ops)


def _build() -> OpRegistry:
    from .auto_color import AutoColor
    from .denoise import Denoise
    from .fit import Fit
    from .inpaint import Inpaint
    from .restore_faces import RestoreFaces
    from .sharpen import Sharpen
    from .stylize import Stylize
    from .upscale import Upscale

    registry = OpRegistry()
    for op in (
        Fit(),
        Denoise(),
        Sharpen(),
        AutoColor(),
        Stylize(),
        Inpaint(),
        Upscale(),
        RestoreFaces(),
    ):
        registry.add(op)
    return registry


_REGISTRY: OpRegistry | None = None


def registry() -> OpRegistry:
    """The process-wide registry (built on first use, so importing lib stays cheap)."""
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = _build()
    return _REGISTRY
