"""Stable Diffusion img2img (learned re-drawing), for the ``restyle`` operation.

:mod:`.checkpoint` checks what a local checkpoint path holds and gives its content identity
(no weights read); :mod:`.pipeline` loads it with diffusers (an optional extra, never
downloading anything) and re-draws images deterministically for a seed; :mod:`.control` does
the same checks for a ControlNet (which keeps the picture's composition), loads it next to
the checkpoint and computes its canny edge condition. Importing this package imports neither
torch nor diffusers.
"""

from retouch.lib.models.diffusion.checkpoint import (
    INSTALL_HINT,
    check_checkpoint,
    checkpoint_id,
    require_diffusers,
)
from retouch.lib.models.diffusion.control import (
    canny_edges,
    check_controlnet,
    controlnet_id,
)
from retouch.lib.models.diffusion.pipeline import (
    SCHEDULERS,
    img2img,
    load_pipeline,
    prompt_note,
    seed_for,
    token_limit_note,
)

__all__ = [
    "INSTALL_HINT",
    "SCHEDULERS",
    "canny_edges",
    "check_checkpoint",
    "check_controlnet",
    "checkpoint_id",
    "controlnet_id",
    "img2img",
    "load_pipeline",
    "prompt_note",
    "require_diffusers",
    "seed_for",
    "token_limit_note",
]
