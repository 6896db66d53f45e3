"""The one place that makes gfpgan / realesrgan / basicsr / facexlib usable here.

Every model import goes through :func:`ensure_compat` (``import_gfpgan``/``import_realesrgan``
call it), which does two things once per process:

- basicsr 1.4.2 imports ``torchvision.transforms.functional_tensor``, removed in torchvision
  0.17; a stand-in module exposing ``rgb_to_grayscale`` is registered, only when the real one
  is missing.
- facexlib's face detector and parser download their weights in ``__init__`` into
  ``gfpgan/weights`` relative to the current directory. Its ``load_file_from_url`` (as bound in
  ``facexlib.detection`` and ``facexlib.parsing``) is replaced so that the files resolve through
  :func:`retouch.lib.models.fetch.resolve`: the model dir, the mirror, the official URL unless
  offline, with our verification and error messages. facexlib itself never downloads.
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
import types
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from ..errors import ModelNotAvailableError

_done = False
_lock = threading.Lock()

_SHIM_NAME = "torchvision.transforms.functional_tensor"


def _install_functional_tensor_shim() -> None:
    try:
        importlib.import_module(_SHIM_NAME)
        return
    except ImportError:
        pass
    from torchvision.transforms import functional

    shim = types.ModuleType(_SHIM_NAME)
    shim.__doc__ = "retouch compatibility stand-in for the module removed in torchvision 0.17"
    shim.rgb_to_grayscale = functional.rgb_to_grayscale  # type: ignore[attr-defined]
    sys.modules[_SHIM_NAME] = shim


def _facexlib_load_file_from_url(
    url: str,
    model_dir: str | None = None,
    progress: bool = True,
    file_name: str | None = None,
    save_dir: str | None = None,
) -> str:
    """Stand-in for facexlib's downloader: ignores its folders and resolves through retouch."""
    from .fetch import model_dir as retouch_model_dir
    from .fetch import resolve
    from .specs import spec_for_filename

    filename = file_name or os.path.basename(urlparse(url).path)
    spec = spec_for_filename(filename)
    if spec is not None:
        return str(resolve(spec.name))
    # A facexlib model retouch has no spec for (not used by retouch's own code paths): use it
    # from the model dir if someone put it there, never download it.
    local = Path(retouch_model_dir()) / filename
    if local.is_file():
        return str(local)
    raise ModelNotAvailableError(
        f"facexlib asked for {filename}, which is not in retouch's model registry and not at "
        f"{local}. Download {url} and put it at {local}."
    )


_facexlib_load_file_from_url._retouch_redirect = True  # type: ignore[attr-defined]


def _redirect_facexlib() -> None:
    for module_name in ("facexlib.detection", "facexlib.parsing"):
        module = importlib.import_module(module_name)
        current = getattr(module, "load_file_from_url", None)
        if not getattr(current, "_retouch_redirect", False):
            module.load_file_from_url = _facexlib_load_file_from_url  # type: ignore[attr-defined]


def ensure_compat() -> None:
    """Install the torchvision shim and the facexlib download redirect (idempotent, thread-safe)."""
    global _done
    if _done:
        return
    with _lock:
        if _done:
            return
        _install_functional_tensor_shim()
        _redirect_facexlib()
        _done = True


def import_gfpgan() -> Any:
    """The ``gfpgan`` package, imported after :func:`ensure_compat`."""
    ensure_compat()
    import gfpgan

    return gfpgan


def import_realesrgan() -> Any:
    """The ``realesrgan`` package, imported after :func:`ensure_compat`."""
    ensure_compat()
    import realesrgan

    return realesrgan


def preload(names: list[str]) -> threading.Thread | None:
    """Start importing the libraries the models ``names`` need (torch, basicsr, realesrgan,
    gfpgan, facexlib: about 3 s) in a daemon thread, so the import overlaps the flow's start
    (Prefect's own import, creating the flow run, preparing the first images).

    Nothing is built and nothing is kept: the flow imports the same modules when it loads a
    model and either finds them ready or waits for this thread's import of them. An error
    here is ignored; the flow's own import raises it where it is reported. None when no model
    is named.
    """
    from .specs import get_spec

    kinds = {get_spec(name).kind for name in names}
    if not kinds:
        return None

    def work() -> None:
        try:
            from . import loaders, tiling  # noqa: F401  (torch, and the modules that run models)

            if "realesrgan" in kinds or "gfpgan" in kinds:
                import_realesrgan()
            if "gfpgan" in kinds:
                import_gfpgan()
        except Exception:  # noqa: BLE001 - reported by the flow's own import
            return

    thread = threading.Thread(target=work, name="retouch-preload", daemon=True)
    thread.start()
    return thread
