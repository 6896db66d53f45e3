"""Model weights as data: the registry (specs), fetching (fetch), the per-process pool (pool),
the builders of RealESRGANer/GFPGANer (loaders) and the compat layer every model import uses.

Importing this package does not import torch; ``loaders`` does.
"""

from retouch.lib.models.compat import ensure_compat, import_gfpgan, import_realesrgan
from retouch.lib.models.fetch import import_file, pull, resolve, status, weights_id
from retouch.lib.models.pool import ModelPool, default_pool
from retouch.lib.models.specs import ModelSpec, all_specs, get_spec, names, required_models

__all__ = [
    "ModelPool",
    "ModelSpec",
    "all_specs",
    "default_pool",
    "ensure_compat",
    "get_spec",
    "import_file",
    "import_gfpgan",
    "import_realesrgan",
    "names",
    "pull",
    "required_models",
    "resolve",
    "status",
    "weights_id",
]
