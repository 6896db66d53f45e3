"""Output naming: templates, escape attempts, collisions, unicode, zero padding."""

from __future__ import annotations

import posixpath

import pytest

from retouch.lib.delivery.naming import is_safe_name, render_names, validate_template
from retouch.lib.errors import RecipeError


def _entries(*stems: str, ext: str = "jpg", **extra) -> list[dict]:
    return [{"stem": s, "ext": ext, "index": i, **extra} for i, s in enumerate(stems, 1)]


def _assert_contained(name: str) -> None:
    assert is_safe_name(name), name
    normalized = posixpath.normpath(posixpath.join("/dest", name))
    assert normalized.startswith("/dest/"), name
    assert "\\" not in name and "\x00" not in name


def test_default_template_keeps_unicode_and_spaces():
    names = render_names(_entries("Été à la plage", "東京 夜景", "mum's 60th"), "{stem}.{ext}")
    assert names == ["Été à la plage.jpg", "東京 夜景.jpg", "mum's 60th.jpg"]


def test_zero_padding_follows_count_and_explicit_spec():
    entries = _entries(*[f"p{i}" for i in range(1, 101)], preset="portrait")
    names = render_names(entries, "{preset}/{index}_{stem}.{ext}")
    assert names[0] == "portrait/001_p1.jpg" and names[99] == "portrait/100_p100.jpg"
    assert render_names(_entries("a", "b"), "{index:04d}.{ext}") == ["0001.jpg", "0002.jpg"]
    assert render_names(_entries("a", "b"), "{index}.{ext}") == ["1.jpg", "2.jpg"]


@pytest.mark.parametrize(
    "template",
    [
        "../{stem}.{ext}",
        "/abs/{stem}.{ext}",
        "..\\..\\{stem}.{ext}",
        "C:/{stem}.{ext}",
        "a/../../{stem}.{ext}",
    ],
)
def test_template_escapes_are_neutralised(template):
    (name,) = render_names(_entries("photo"), template)
    _assert_contained(name)
    assert name.endswith("photo.jpg")


@pytest.mark.parametrize(
    "stem",
    ["../../x", "/etc/passwd", "..", ".", "a\\..\\b", "nul\x00byte", "ctl\x1b[31m", "C:evil"],
)
def test_hostile_stems_stay_one_file_in_the_destination(stem):
    (name,) = render_names(_entries(stem), "out/{stem}.{ext}")
    _assert_contained(name)
    assert name.startswith("out/") and name.count("/") == 1, name


def test_names_are_never_only_dots():
    entries = [{"stem": "..", "ext": "", "index": 1}, {"stem": ".", "ext": ".", "index": 2}]
    assert render_names(entries, "{stem}") == ["__", "_"]
    assert render_names(entries, "{stem}.{ext}") == ["__", "_"]
    assert render_names(_entries("..."), "{stem}/{index}.{ext}") == ["___/1.jpg"]
    assert render_names([{"stem": "", "ext": "", "index": 1}], "{stem}.{ext}") == ["unnamed"]


def test_leading_dashes_kept_and_hidden_dot_neutralised():
    assert render_names(_entries("-rf"), "{stem}.{ext}") == ["-rf.jpg"]
    assert render_names(_entries(".bashrc"), "{stem}.{ext}") == ["_bashrc.jpg"]


def test_case_insensitive_collisions_are_numbered_in_order():
    names = render_names(_entries("IMG", "img", "Img", "img-2", "other"), "{stem}.{ext}")
    assert names == ["IMG.jpg", "img-2.jpg", "Img-3.jpg", "img-2-2.jpg", "other.jpg"]
    assert len({n.casefold() for n in names}) == len(names)
    again = render_names(_entries("IMG", "img", "Img", "img-2", "other"), "{stem}.{ext}")
    assert again == names  # deterministic


def test_collision_inside_folders_and_same_template_for_all():
    names = render_names(_entries("a", "b", "c", preset="web"), "{preset}/result.{ext}")
    assert names == ["web/result.jpg", "web/result-2.jpg", "web/result-3.jpg"]


def test_folder_placeholder_makes_folders_safely():
    entries = [
        {"stem": "a", "ext": "png", "index": 1, "folder": "2024/summer"},
        {"stem": "b", "ext": "png", "index": 2, "folder": "../../etc"},
        {"stem": "c", "ext": "png", "index": 3},
    ]
    names = render_names(entries, "{folder}/{stem}.{ext}")
    assert names == ["2024/summer/a.png", "__/__/etc/b.png", "c.png"]


def test_unknown_placeholder_lists_valid_ones():
    with pytest.raises(RecipeError) as info:
        validate_template("{stem}_{camera}.{ext}")
    text = str(info.value)
    assert "{camera}" in text and "{stem}" in text and "{index}" in text and "{preset}" in text
    assert "{score}" in text and "{group}" in text


@pytest.mark.parametrize(
    "template",
    ["", "{stem.__class__}", "{stem[0]}", "{stem!r}", "{}", "{stem", "{index:s}", "{stem:{ext}}"],
)
def test_invalid_templates_are_recipe_errors(template):
    with pytest.raises(RecipeError):
        validate_template(template)


def test_long_stems_are_truncated_keeping_the_extension():
    (name,) = render_names(_entries("é" * 300), "{stem}.{ext}")
    assert name.endswith(".jpg") and len(name.encode()) <= 255


def test_missing_required_key():
    with pytest.raises(RecipeError, match="lacks ext"):
        render_names([{"stem": "a", "index": 1}], "{stem}")


def test_run_fields_scores_and_configurable_index_width():
    entries = [
        {"stem": "a", "ext": "jpg", "index": 1, "profile": "web", "date": "2026-11-24",
         "score": 71.46, "verdict": "improved", "group": "portrait", "tag": "client/A"},
        {"stem": "b", "ext": "jpg", "index": 2, "profile": "web", "date": "2026-11-24",
         "score": None, "verdict": None},
    ]  # fmt: skip
    names = render_names(
        entries, "{date}/{profile}-{index}-{verdict}-{score:.0f}-{group}-{tag}.{ext}", index_width=4
    )
    assert names == [
        "2026-11-24/web-0001-improved-71-portrait-client_A.jpg",
        "2026-11-24/web-0002-na-na-na-na.jpg",
    ]
    with pytest.raises(RecipeError, match="bad format"):
        validate_template("{score:d}")


def test_preview_names_match_the_export_plan():
    from retouch.lib.delivery.delivery import preview_names
    from retouch.lib.recipe import recipe_from_dict

    recipe = recipe_from_dict(
        {
            "name": "shop",
            "export": {
                "name_template": "{preset}-{index}-{stem}.{ext}",
                "profiles": [
                    {"name": "web", "format": "webp"},
                    {"name": "print", "format": "tiff"},
                ],
            },
        }
    )
    rows = preview_names(["x/IMG 1.png", "y/IMG 1.png", "z.jpg"], recipe)
    assert [(r["image"], r["profile"], r["name"]) for r in rows] == [
        ("x/IMG 1.png", "web", "web/shop-1-IMG 1.webp"),
        ("x/IMG 1.png", "print", "print/shop-1-IMG 1.tif"),
        ("y/IMG 1.png", "web", "web/shop-2-IMG 1.webp"),
        ("y/IMG 1.png", "print", "print/shop-2-IMG 1.tif"),
        ("z.jpg", "web", "web/shop-3-z.webp"),
        ("z.jpg", "print", "print/shop-3-z.tif"),
    ]
    same = recipe_from_dict({"export": {"format": "same", "name_template": "{stem}.{ext}"}})
    assert [r["name"] for r in preview_names(["a.PNG", "sub/a.png"], same)] == ["a.png", "a-2.png"]
