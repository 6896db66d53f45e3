"""Recommendations learn from the version history: the kept results that scored best."""

from __future__ import annotations

from retouch.lib.quality.recommend import Advice, groups, learn_from_history
from retouch.lib.recipe import apply_overrides, load_preset
from retouch.lib.versions import VersionStore
from retouch.lib.workspace import Workspace


def _keep(store: VersionStore, image: str, preset: str, overrides: list[str], score: float):
    recipe = apply_overrides(load_preset(preset), overrides)
    store.add(
        image,
        result_key=f"key-{image}-{score}",
        run_id="r1",
        name=f"{image}.jpg",
        source=f"/in/{image}.jpg",
        source_sha256="0" * 64,
        recipe={"name": preset, "steps": recipe.canonical_steps()},
        scores={"score": score, "verdict": "improved"},
    )


def test_history_suggests_the_changes_whose_kept_results_scored_best(tmp_path):
    store = VersionStore(Workspace(str(tmp_path / "ws")))
    for i, score in enumerate((48, 52)):
        _keep(store, f"plain{i}", "web-ready", [], score)
    for i, score in enumerate((61, 65)):
        _keep(store, f"soft{i}", "web-ready", ["sharpen.amount=0.3"], score)
    _keep(store, "harsh0", "web-ready", ["sharpen.amount=1.8"], 30)
    # A later regeneration replaced one plain result: its current version is what counts.
    _keep(store, "plain1", "web-ready", ["sharpen.amount=0.3", "fit.max_side=1024"], 70)
    _keep(store, "q0", "quick", ["sharpen.amount=1.5"], 20)
    _keep(store, "q1", "quick", [], 40)

    learned = learn_from_history(Workspace(str(tmp_path / "ws")))
    web = learned["web-ready"]
    assert web.overrides == ["fit.max_side=1024", "sharpen.amount=0.3"]  # 70 beats 63 and 48
    assert web.mean_score == 70.0 and web.images == 1 and web.baseline == 48.0
    assert "quick" not in learned  # the only change scored below the unchanged preset
    assert "sharpen.amount=0.3" in web.tip() and "unchanged preset: 48" in web.tip()


def test_no_history_no_suggestion_and_groups_share_a_recipe(tmp_path):
    assert learn_from_history(Workspace(str(tmp_path / "empty"))) == {}
    advice = [
        Advice("a.jpg", "/a", "quick", overrides=["sharpen.amount=0.3"]),
        Advice("b.jpg", "/b", "upscale-x4"),
        Advice("c.jpg", "/c", "quick", overrides=["sharpen.amount=0.3"]),
        Advice("bad.jpg", "/bad", error="not an image"),
    ]
    grouped = groups(advice)
    assert list(grouped) == ["quick", "upscale-x4"]
    assert [a.name for a in grouped["quick"]] == ["a.jpg", "c.jpg"]
