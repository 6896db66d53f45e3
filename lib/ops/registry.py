"""The explicit registry of operations: each is listed here once, duplicates are refused."""

from __future__ import annotations

from retouch.lib.errors import UnknownNameError
from retouch.lib.ops.base import Operation


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
    from retouch.lib.ops.auto_color import AutoColor
    from retouch.lib.ops.denoise import Denoise
    from retouch.lib.ops.fit import Fit
    from retouch.lib.ops.inpaint import Inpaint
    from retouch.lib.ops.restore_faces import RestoreFaces
    from retouch.lib.ops.restyle import Restyle
    from retouch.lib.ops.sharpen import Sharpen
    from retouch.lib.ops.stylize import Stylize
    from retouch.lib.ops.upscale import Upscale

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
        Restyle(),
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
