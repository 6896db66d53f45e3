"""Style comparison over the API: what can be compared (GET /api/styles), one photo re-drawn
in several styles with the scores (POST /api/styles/preview), the refusals (each naming the
problem, nothing left behind) and one comparison at a time."""

from __future__ import annotations

import base64
import io
import threading

import pytest

from tests.web.conftest import SAMPLES

ASTRONAUT = (SAMPLES / "astronaut.jpg").read_bytes()  # 53,962 bytes


@pytest.fixture
def models(retouch_home):
    """Random-weight files for two shipped re-drawing models (the others stay missing)."""
    from retouch.lib.settings import get_settings
    from tests.animegan_models import install

    folder = get_settings().resolved_model_dir()
    install(folder, "animeganv2-paprika", seed=0)
    install(folder, "animeganv2-face-paint-v2", seed=1)
    return folder


def _post(client, styles: str | None, *, files=None, **data):
    if styles is not None:
        data["styles"] = styles
    return client.post(
        "/api/styles/preview",
        files=files if files is not None else {"file": ("astronaut.jpg", ASTRONAUT)},
        data=data,
    )


def _staging(retouch_home) -> list:
    folder = retouch_home / "web" / "styles"
    return sorted(folder.iterdir()) if folder.is_dir() else []


def test_styles_lists_redrawing_presets_and_models(serve, models):
    web = serve()
    answer = web.client.get("/api/styles")
    assert answer.status_code == 200, answer.text
    styles = {s["name"]: s for s in answer.json()}
    kinds = {name: s["kind"] for name, s in styles.items()}
    assert {"anime", "face-paint", "painting-sd"} <= {n for n, k in kinds.items() if k == "preset"}
    assert "quick" not in styles and "upscale-x4" not in styles  # no re-drawing step
    assert {
        "animeganv2-paprika",
        "animeganv2-face-paint-v2",
        "animeganv2-face-paint-v1",
        "animeganv2-celeba-distill",
    } <= {n for n, k in kinds.items() if k == "model"}
    for name in ("anime", "face-paint", "animeganv2-paprika", "animeganv2-face-paint-v2"):
        assert styles[name]["available"] is True, styles[name]
        assert styles[name]["unavailable"] is None and styles[name]["weights"] == []
    sd = styles["painting-sd"]
    assert sd["available"] is False and "Stable Diffusion checkpoint" in sd["unavailable"]
    assert "RETOUCH_DIFFUSION_CHECKPOINT" in sd["unavailable"]
    distill = styles["animeganv2-celeba-distill"]
    assert distill["available"] is False
    assert "celeba_distill.pt" in distill["unavailable"]
    assert [w["filename"] for w in distill["weights"]] == ["celeba_distill.pt"]


def test_one_photo_in_three_styles(serve, models, retouch_home):
    """A preset, a re-drawing model and a preset that does not re-draw: one sheet (the photo,
    then one column per style) and a score for each."""
    from PIL import Image

    from retouch.lib.quality import preview

    web = serve()
    answer = _post(web.client, "anime, animeganv2-face-paint-v2,quick", max_side="64")
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert result["image"] == "astronaut.jpg" and result["max_side"] == 64
    assert result["styles"] == ["anime", "animeganv2-face-paint-v2", "quick"]
    head, _, data = result["sheet"].partition(",")
    assert head == "data:image/png;base64"
    with Image.open(io.BytesIO(base64.b64decode(data))) as sheet:
        assert sheet.format == "PNG"
        assert sheet.size == (4 * preview.CELL_SIDE, preview.CELL_SIDE + preview.LABEL_HEIGHT)
    cells = {c["style"]: c for c in result["cells"]}
    assert list(cells) == result["styles"]
    for cell in cells.values():
        assert cell["error"] is None, cell
        assert 0 <= cell["score"] <= 100 and 0 <= cell["score_before"] <= 100
    assert cells["anime"]["verdict"] == cells["animeganv2-face-paint-v2"]["verdict"] == "restyled"
    assert cells["quick"]["verdict"] != "restyled"
    assert result["best"] in result["styles"] and result["seconds"] > 0
    assert _staging(retouch_home) == []  # the upload and the sheet are removed


REFUSALS = [
    pytest.param(
        "anime,van-gogh",
        {},
        400,
        ["'van-gogh' is neither a preset nor a re-drawing model", "face-paint", "paprika"],
        id="unknown-style",
    ),
    pytest.param("anime", {}, 400, ["styles: 1 given", "2 to 6"], id="one-style"),
    pytest.param(
        "anime,face-paint,quick,web-ready,animeganv2-paprika,upscale-x4,remove-objects",
        {},
        400,
        ["styles: 7 given"],
        id="seven-styles",
    ),
    pytest.param("anime,quick,anime", {}, 400, ["'anime' named more than once"], id="twice"),
    pytest.param(
        "anime,animeganv2-celeba-distill",
        {},
        400,
        ["style 'animeganv2-celeba-distill' cannot run on this server", "celeba_distill.pt"],
        id="missing-weights",
    ),
    pytest.param(
        "anime,painting-sd",
        {},
        400,
        ["style 'painting-sd' cannot run on this server", "Stable Diffusion checkpoint"],
        id="no-diffusion-checkpoint",
    ),
    pytest.param(
        "anime,quick",
        {"overrides": '{"restyle.checkpoint": "/srv/models/sd.safetensors"}'},
        400,
        ["overrides: not taken here"],
        id="server-path-override",
    ),
    pytest.param("anime,quick", {"max_side": "4096"}, 400, ["max_side", "64 to 1024"], id="size"),
    pytest.param(
        "anime,quick",
        {"files": {"file": ("notes.jpg", b"shopping list: milk, eggs\n" * 20)}},
        415,
        ["notes.jpg", "not an image"],
        id="not-an-image",
    ),
    pytest.param(
        "anime,quick",
        {"files": [("file", ("a.jpg", ASTRONAUT)), ("file", ("b.jpg", ASTRONAUT))]},
        400,
        ["b.jpg: a second file", "one image only"],
        id="two-photos",
    ),
    pytest.param(
        "anime,quick",
        {"files": {"files": ("a.jpg", ASTRONAUT)}},
        400,
        ["sent as field 'files'", "'file'"],
        id="wrong-field",
    ),
]


@pytest.mark.parametrize(("styles", "extra", "status", "words"), REFUSALS)
def test_refusals_name_the_problem(serve, models, retouch_home, styles, extra, status, words):
    web = serve()
    answer = _post(web.client, styles, **extra)
    assert answer.status_code == status, answer.text
    detail = answer.json()["detail"]
    for word in words:
        assert word in detail, detail
    assert _staging(retouch_home) == []


def test_no_photo_and_the_file_size_limit(serve, models, retouch_home, monkeypatch):
    from retouch.lib.settings import reload_settings

    web = serve()
    answer = _post(web.client, "anime,quick", files={"x": (None, "y")})
    assert answer.status_code == 400 and "unknown form field 'x'" in answer.json()["detail"]
    answer = _post(web.client, None, files={"styles": (None, "anime,quick")})
    assert answer.status_code == 400 and "no image" in answer.json()["detail"], answer.text
    answer = web.client.post("/api/styles/preview", data={"styles": "anime,quick"})
    assert answer.status_code == 415 and "multipart/form-data" in answer.json()["detail"]

    monkeypatch.setenv("RETOUCH_WEB_MAX_FILE_BYTES", "40000")
    reload_settings()
    answer = _post(web.client, "anime,quick")
    assert answer.status_code == 413, answer.text
    assert "40000 bytes per file (RETOUCH_WEB_MAX_FILE_BYTES)" in answer.json()["detail"]
    assert _staging(retouch_home) == []


def test_one_comparison_at_a_time(serve, models, retouch_home, monkeypatch):
    """While one comparison runs, a second gets 429 at once (nothing of it is kept); the
    first still gets its sheet, and the next one runs."""
    from retouch.lib.quality import preview

    inside, release = threading.Event(), threading.Event()
    real = preview.run_preview

    def held(*args, **kwargs):
        inside.set()
        assert release.wait(60)
        return real(*args, **kwargs)

    monkeypatch.setattr(preview, "run_preview", held)
    web = serve()
    first: dict = {}
    worker = threading.Thread(
        target=lambda: first.setdefault("answer", _post(web.client, "anime,quick", max_side="64"))
    )
    worker.start()
    try:
        assert inside.wait(60)
        busy = _post(web.client, "face-paint,quick", max_side="64")
        assert busy.status_code == 429, busy.text
        assert "one at a time" in busy.json()["detail"]
        assert busy.headers["retry-after"] == "5"
        assert len(_staging(retouch_home)) == 1  # only the running comparison's
    finally:
        release.set()
        worker.join(120)
    assert first["answer"].status_code == 200, first["answer"].text
    assert [c["style"] for c in first["answer"].json()["cells"]] == ["anime", "quick"]
    monkeypatch.setattr(preview, "run_preview", real)
    again = _post(web.client, "face-paint,quick", max_side="64")
    assert again.status_code == 200, again.text
    assert _staging(retouch_home) == []
