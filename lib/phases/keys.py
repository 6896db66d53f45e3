"""Result keys: what makes two results the same (image bytes, steps with op versions,
weights, per-image inputs), so a result is computed once and reused by content."""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

from retouch.lib.ops.registry import registry
from retouch.lib.recipe import Recipe
from retouch.lib.records import ImageRecord

if TYPE_CHECKING:  # context builds keys: it imports this module
    from retouch.lib.phases.context import RunConfig


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def weights_ids(recipe: Recipe) -> dict[str, str]:
    """Identity of every weight file the recipe uses (resolving them; raises if missing).
    Each step's own check runs first (an optional package or a checkpoint that is missing
    raises here too), so whatever calls this before a run stops for either."""
    from retouch.lib.models import fetch

    for step in recipe.steps:
        registry().get(step.op).check(step.parsed())
    return {name: fetch.weights_id(name, fetch.resolve(name)) for name in recipe.models()}


def result_key(
    image_sha: str, recipe: Recipe, weights: dict[str, str], inputs: list[Any] | None = None
) -> str:
    """Same image bytes, same steps (with op versions), same weights and same per-image inputs
    of the steps (e.g. a mask): same key, same result. Parameters that only change videos
    are left out."""
    return _prefix_key(image_sha, recipe.canonical_steps(images=True), weights, inputs or [])


def step_keys(
    image_sha: str, recipe: Recipe, weights: dict[str, str], inputs: list[Any] | None = None
) -> list[str]:
    """The key of the image after each prefix of the recipe: ``keys[i]`` covers steps
    ``1..i`` (their canonical parameters and op versions, the weights those steps use, and
    their per-image inputs), so ``keys[-1] == result_key(...)`` and changing step ``i``
    leaves ``keys[:i]`` as they were: those intermediates are reused."""
    canonical = recipe.canonical_steps(images=True)
    inputs = list(inputs or [None] * len(canonical))
    used: set[str] = set()
    keys = [_prefix_key(image_sha, [], {}, [])]
    for i, step in enumerate(recipe.steps, start=1):
        used.update(registry().get(step.op).models(step.parsed()))
        subset = {name: w for name, w in weights.items() if name in used}
        keys.append(_prefix_key(image_sha, canonical[:i], subset, inputs[:i]))
    return keys


def _prefix_key(
    image_sha: str, steps: list[dict[str, Any]], weights: dict[str, str], inputs: list[Any]
) -> str:
    payload: dict[str, Any] = {"image": image_sha, "steps": steps, "weights": weights}
    if inputs and any(i is not None for i in inputs):
        payload["inputs"] = inputs
    return sha256_bytes(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode())


def chunk_key(records: list[ImageRecord], config: RunConfig) -> str | None:
    """Content-based key of a chunk's process phase: over the chunk's result keys (image
    sha256, steps with op versions, weight hashes, per-image inputs such as masks) - never
    paths. Only a chunk whose every result is already in the workspace gets a key (None = not
    cached), so failures are never cached and a hit can always be exported."""
    if config.refresh:
        return None
    ctx = config.context()
    keys = []
    try:
        for r in records:
            if r.ok:
                key = ctx.image_key(r, config.weights, config.device)
                if not ctx.workspace.has_result(key):
                    return None
                keys.append(key)
    except Exception:  # e.g. an unreadable mask: let the task run and report it per image
        return None
    payload = {
        "records": [(r.index, r.name, r.uri, r.sha256, r.status) for r in records],
        "results": keys,
        "workspace": config.workspace,
    }
    return "retouch-process-" + sha256_bytes(json.dumps(payload, sort_keys=True).encode())
