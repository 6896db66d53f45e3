"""The one place that makes gfpgan / realesrgan / basicsr / facexlib usable here.

Every model import goes through :func:`ensure_compat` (``import_gfpgan``/``import_realesrgan``
call it), which does these things once per process:

- basicsr 1.4.2 imports ``torchvision.transforms.functional_tensor``, removed in torchvision
  0.17; a stand-in module exposing ``rgb_to_grayscale`` is registered, only when the real one
  is missing.
- facexlib's face detector and parser download their weights in ``__init__`` into
  ``gfpgan/weights`` relative to the current directory. Its ``load_file_from_url`` (as bound in
  ``facexlib.detection`` and ``facexlib.parsing``) is replaced so that the files resolve through
  :func:`retouch.lib.models.fetch.resolve`: the model dir, the mirror, the official URL unless
  offline, with our verification and error messages. facexlib itself never downloads. The
  redirect is applied when those modules are imported (:func:`_when_imported`), so a run
  without faces never imports facexlib.
- The packages' training code (datasets, training models, loops), which their ``__init__``
  imports and inference never uses, is registered but not run until something uses it
  (:data:`TRAINING_ONLY`): 0.6 s less before a model run's first image. The same goes for
  torchvision's model zoo and ops (:data:`VISION_EXTRAS`, with ``torch._dynamo``: 1.1 s).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
import threading
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from retouch.lib.errors import ModelNotAvailableError

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
    from retouch.lib.models.fetch import model_dir as retouch_model_dir
    from retouch.lib.models.fetch import resolve
    from retouch.lib.models.specs import spec_for_filename

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


Patch = Callable[[types.ModuleType], None]
_after_import: dict[str, list[Patch]] = {}  # patches waiting for their module's first import


def _when_imported(name: str, patch: Patch) -> None:
    """Apply ``patch`` to module ``name``: now if it is imported, else right after its code
    first runs, before anything else can use it. Nothing is imported for it."""
    module = sys.modules.get(name)
    if module is not None and name not in _pending:
        patch(module)
        return
    _after_import.setdefault(name, []).append(patch)
    if not any(isinstance(f, _PatchOnImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _PatchOnImport())


class _ThenPatch(importlib.abc.Loader):
    """A module's own loader, then the patches waiting for that module."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        self.loader.exec_module(module)
        for patch in _after_import.pop(module.__name__, []):
            patch(module)

    def __getattr__(self, name: str) -> Any:  # get_source, get_resource_reader, ...
        return getattr(self.loader, name)


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Finds the modules that patches wait for as the other finders do, and hands them to
    a loader that applies the patches once the module's code has run."""

    def find_spec(
        self, fullname: str, path: Any = None, target: Any = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in _after_import:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _ThenPatch(spec.loader)
                return spec
        return None


def _point_at_retouch(module: types.ModuleType) -> None:
    current = getattr(module, "load_file_from_url", None)
    if not getattr(current, "_retouch_redirect", False):
        module.load_file_from_url = _facexlib_load_file_from_url  # type: ignore[attr-defined]


def _redirect_facexlib() -> None:
    """Redirect facexlib's downloader in the modules that call it, when they are imported
    (importing facexlib here would import torchvision's model zoo and ``torch._dynamo`` into
    runs that never detect a face)."""
    for module_name in ("facexlib.detection", "facexlib.parsing"):
        _when_imported(module_name, _point_at_retouch)


TRAINING_ONLY = (
    "basicsr.data",
    "basicsr.losses",
    "basicsr.metrics",
    "basicsr.models",
    "basicsr.test",
    "basicsr.train",
    "realesrgan.data",
    "realesrgan.models",
    "gfpgan.data",
    "gfpgan.models",
)
"""Code that the three packages import from their ``__init__`` and inference never uses:
datasets and degradations, training models and loops, basicsr's metrics (retouch has its own
NIQE). basicsr's datasets alone import scipy.stats: with the rest, 0.6 s of every model run's
start, before the first image (0.95 s -> 0.35 s to import the three packages here)."""

VISION_EXTRAS = (
    "torchvision.models",
    "torchvision.ops",
    "basicsr.archs.vgg_arch",
    "basicsr.archs.dfdnet_arch",
)
"""torchvision's model zoo and detection ops, which its ``__init__`` imports, and the two
basicsr networks built on its VGG. ``torchvision.ops`` imports ``torch._dynamo`` (with sympy):
1.1 s of an upscale run's start for code that only face detection (facexlib's RetinaFace, which
imports them when a face model loads) and training use."""


_defer_lock = threading.RLock()
_pending: dict[str, types.ModuleType] = {}  # deferred modules whose code has not run yet


def _load_deferred(module: types.ModuleType) -> None:
    """Run a deferred module's own code now (once)."""
    with _defer_lock:
        if _pending.pop(module.__name__, None) is None:
            return
        del module.__dict__["__getattr__"]
        del module.__dict__["__all__"]
        assert module.__spec__ is not None and module.__spec__.loader is not None
        try:
            module.__spec__.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(module.__name__, None)  # as for any import that fails
            raise
        for patch in _after_import.pop(module.__name__, []):
            patch(module)


class _Present(importlib.abc.Loader):
    """Loader of a module that running its deferred package has just imported."""

    def __init__(self, module: types.ModuleType) -> None:
        self.module = module
        self.spec = module.__spec__

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        return self.module

    def exec_module(self, module: types.ModuleType) -> None:
        module.__spec__ = self.spec  # the import system set ours; keep the real one


class _RunDeferredFirst(importlib.abc.MetaPathFinder):
    """Importing a submodule of a deferred package runs the package first, as Python does
    for any package, so the package's own imports happen in their usual order."""

    def find_spec(
        self, fullname: str, path: Any = None, target: Any = None
    ) -> importlib.machinery.ModuleSpec | None:
        parent = fullname.rpartition(".")[0]
        if parent not in _pending:
            return None
        _load_deferred(_pending[parent])
        present = sys.modules.get(fullname)
        if present is None:
            return None  # the package did not import it: the usual finders will
        # The import system takes a module's own __spec__ when it is already there: it must
        # name the loader that hands the module back (which then restores the real spec).
        ours = importlib.util.spec_from_loader(fullname, _Present(present))
        present.__spec__ = ours
        return ours


def _defer(name: str) -> None:
    """Register module ``name`` without running it; its code runs on first use.

    ``from .name import *`` in the parent takes nothing (``__all__`` is empty until then);
    reading any other attribute (``from name import x``) or importing one of its submodules
    runs the module's code first, so every use sees the real module, set up as usual.
    """
    if name in sys.modules:
        return
    top, *inner = name.split(".")
    found = importlib.util.find_spec(top)  # a top-level spec: nothing is imported
    if found is None or not found.submodule_search_locations or not inner:
        return
    # The packages in between are plain folders (checked): their modules are files there.
    folder = Path(list(found.submodule_search_locations)[0])
    for part in inner[:-1]:
        folder = folder / part
        if not (folder / "__init__.py").is_file():
            return
    child = inner[-1]
    if (folder / child / "__init__.py").is_file():
        spec = importlib.util.spec_from_file_location(
            name, folder / child / "__init__.py", submodule_search_locations=[str(folder / child)]
        )
    elif (folder / f"{child}.py").is_file():
        spec = importlib.util.spec_from_file_location(name, folder / f"{child}.py")
    else:
        return
    if spec is None:
        return
    module = importlib.util.module_from_spec(spec)

    def __getattr__(attr: str) -> Any:  # noqa: N807 (PEP 562 module attribute hook)
        if attr.startswith("__") and attr.endswith("__"):
            raise AttributeError(attr)
        _load_deferred(module)
        return getattr(module, attr)

    module.__dict__["__all__"] = []
    module.__dict__["__getattr__"] = __getattr__
    _pending[name] = module
    sys.modules[name] = module
    if not any(isinstance(f, _RunDeferredFirst) for f in sys.meta_path):
        sys.meta_path.insert(0, _RunDeferredFirst())


def _attach(name: str) -> None:
    """Make deferred module ``name`` an attribute of its package when the package is
    imported, as a real import of it would have (the package is not imported for it)."""
    parent, _, child = name.rpartition(".")
    module = sys.modules[name]

    def attach(package: types.ModuleType) -> None:
        if not hasattr(package, child):
            setattr(package, child, module)

    _when_imported(parent, attach)


def _arch_registry_runs_deferred_archs(registry: types.ModuleType) -> None:
    """basicsr's networks register themselves when their module runs; a name the registry
    lacks runs the deferred arch modules first (``build_network({"type": "DFDNet"})``)."""
    arch = registry.ARCH_REGISTRY
    if getattr(arch, "_retouch_runs_deferred", False):
        return

    def run_deferred() -> None:
        for name in [n for n in _pending if n.startswith("basicsr.archs.")]:
            module = _pending.get(name)
            if module is not None:
                _load_deferred(module)

    class RunsDeferredArchs(type(arch)):  # type: ignore[misc]
        _retouch_runs_deferred = True

        def get(self, name: str, suffix: str = "basicsr") -> Any:
            if name not in self._obj_map and f"{name}_{suffix}" not in self._obj_map:
                run_deferred()
            return super().get(name, suffix)

        def __contains__(self, name: object) -> bool:
            if name not in self._obj_map:
                run_deferred()
            return super().__contains__(name)

        def __iter__(self) -> Any:
            run_deferred()
            return super().__iter__()

        def keys(self) -> Any:
            run_deferred()
            return super().keys()

    arch.__class__ = RunsDeferredArchs


def ensure_compat(lean: bool = True) -> None:
    """Install the torchvision shim and the facexlib download redirect (idempotent,
    thread-safe). ``lean`` (retouch's own model code): the packages' training code and
    torchvision's model zoo are not imported until something uses them (:data:`TRAINING_ONLY`,
    :data:`VISION_EXTRAS`). Without it (the bench's reference-script baseline) everything
    imports as the packages do by themselves."""
    global _done
    if _done:
        return
    with _lock:
        if _done:
            return
        if lean:  # before torchvision's import (by the shim) runs its __init__
            for name in TRAINING_ONLY + VISION_EXTRAS:
                _defer(name)
                if name in _pending:
                    _attach(name)
            _when_imported("basicsr.utils.registry", _arch_registry_runs_deferred_archs)
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


def preload(
    names: list[str], recipe: Any = None, device: str | None = None
) -> threading.Thread | None:
    """Start importing the libraries the models ``names`` need (torch, basicsr, realesrgan,
    gfpgan, facexlib: about 3 s) in a daemon thread, so the import overlaps the flow's start
    (Prefect's own import, creating the flow run, preparing the first images).

    With ``recipe`` (a :class:`~retouch.lib.recipe.Recipe`) and a ``device`` setting that
    resolves to the CPU, the thread then builds the recipe's models into this process's pool
    (``Operation.pool_entries``: the keys and factories the steps themselves use), so the
    first image finds them loaded: 1-3 s of the first result on a 2-core CPU. Not on a GPU,
    where models load under the run's GPU limit and memory budget.

    The flow imports the same modules and asks the pool for the same models: it finds them
    ready, or waits for this thread's import or build of them (the pool builds a model once).
    An error here is ignored; the flow's own import or load raises it where it is reported.
    None when no model is named.
    """
    from retouch.lib.models.specs import get_spec

    kinds = {get_spec(name).kind for name in names}
    if not kinds:
        return None

    def work() -> None:
        try:
            from retouch.lib.models import loaders, tiling  # noqa: F401  (torch, and the modules that run models)
            from retouch.lib.models.families import get_family

            for kind in sorted(kinds):
                get_family(kind).preload()
            if recipe is not None:
                _build_models(recipe, device)
        except Exception:  # noqa: BLE001 - reported by the flow's own import
            return

    thread = threading.Thread(target=work, name="retouch-preload", daemon=True)
    thread.start()
    return thread


def _build_models(recipe: Any, device: str | None) -> None:
    """Build the models of ``recipe``'s steps into the default pool when ``device`` resolves
    to the CPU (see :func:`preload`)."""
    from retouch.lib.models.device import run_device
    from retouch.lib.models.pool import default_pool

    if run_device(recipe, device) != "cpu":
        return
    from retouch.lib.ops.registry import registry

    pool = default_pool()
    for step in recipe.steps:
        for key, factory in registry().get(step.op).pool_entries(step.parsed(), "cpu"):
            pool.get(key, factory, ahead=True)
