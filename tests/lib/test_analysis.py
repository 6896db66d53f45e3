"""Image analysis: the measures move the right way, and quality_score flags bad results."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from retouch.lib.image import Image
from retouch.lib.quality import analysis, measures, score
from retouch.lib.quality.faces import detect_faces, face_detector


def photo(h: int = 128, w: int = 160, seed: int = 0) -> np.ndarray:
    """HxWx3 BGR uint8: neutral gradient, shapes with edges and some fine texture."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    g = 70 + 100 * xx / w + 30 * np.sin(yy / 9.0)
    img = np.repeat(g[:, :, None], 3, axis=2)
    cv2.circle(img, (w // 3, h // 2), h // 5, (30, 60, 200), -1)
    cv2.rectangle(img, (w // 2, h // 4), (w - 20, h // 2), (200, 180, 40), -1)
    img += rng.normal(0, 1.0, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def noisy(img: np.ndarray, sigma: float, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(img + rng.normal(0, sigma, img.shape), 0, 255).astype(np.uint8)


def test_sharpness_and_noise_move_the_right_way():
    img = photo()
    blurred = cv2.GaussianBlur(img, (0, 0), 2)
    assert measures.sharpness(blurred) < 0.5 * measures.sharpness(img)
    # per-channel noise of 10 reads about 6.7 on luminance (0.67 = norm of the luma weights)
    assert measures.noise_sigma(noisy(img, 10)) > max(5.0, 5 * measures.noise_sigma(img))
    # the estimator reads roughly the sigma that was added
    flat = np.full((200, 200), 128, np.uint8)
    assert 8 < measures.noise_sigma(noisy(flat, 10)) < 12


def test_measures_agree_between_8_and_16_bit():
    img = photo()
    img16 = img.astype(np.uint16) * 257
    assert measures.sharpness(img16) == pytest.approx(measures.sharpness(img), rel=1e-3)
    assert measures.color_cast(img16) == pytest.approx(measures.color_cast(img), abs=0.05)


def test_exposure_and_color_cast():
    dark = np.full((50, 50, 3), 2, np.uint8)
    dark[:10] = 255
    exp = measures.exposure(dark)
    assert exp["dark"] == pytest.approx(0.8) and exp["bright"] == pytest.approx(0.2)
    gray = np.full((20, 20, 3), 128, np.uint8)
    tinted = gray.copy()
    tinted[:, :, 0] = 180  # blue cast (BGR)
    assert measures.color_cast(gray) < 0.5 < 10 < measures.color_cast(tinted)


def test_detail_map_peaks_on_texture():
    img = np.full((100, 200, 3), 120, np.uint8)
    img[30:70, 150:190] = np.random.default_rng(3).integers(0, 256, (40, 40, 3))
    dmap = measures.detail_map(img)
    ys, xs = np.unravel_index(np.argmax(dmap), dmap.shape)
    assert 150 <= xs * 200 / dmap.shape[1] <= 190


def test_detect_faces_returns_boxes_inside_the_image():
    assert detect_faces(np.full((200, 200, 3), 128, np.uint8)) == []
    assert detect_faces(np.zeros((5, 5, 3), np.uint8)) == []
    if face_detector() is None:
        pytest.skip("no face detector in this OpenCV/scikit-image install")
    skdata = pytest.importorskip("skimage.data")
    face = cv2.cvtColor(skdata.astronaut(), cv2.COLOR_RGB2BGR)  # ships with scikit-image
    boxes = detect_faces(face)
    # the astronaut's face is around x 170-260, y 70-170 in this 512x512 picture
    assert any(150 < x + w / 2 < 290 and 60 < y + h / 2 < 190 for x, y, w, h in boxes)
    assert all(0 <= x and 0 <= y and x + w <= 512 and y + h <= 512 for x, y, w, h in boxes)


def test_analyse_reports_everything_and_recommends():
    image = Image(photo(), alpha=np.full((128, 160), 255, np.uint8))
    result = analysis.analyse(image)
    for key in (
        "width",
        "height",
        "megapixels",
        "faces",
        "sharpness",
        "noise",
        "exposure",
        "color_cast",
    ):
        assert key in result
    assert (result["width"], result["height"], result["bit_depth"]) == (160, 128, 8)
    assert result["has_alpha"] and not result["is_gray"]
    tips = analysis.recommend(result)
    assert tips[0] == "suggested preset: upscale-x4"  # small, no faces, a photo
    assert any("small image" in t for t in tips)

    noisy_tips = analysis.recommend(analysis.analyse(Image(noisy(photo(), 15)), faces=False))
    assert any("denoise" in t for t in noisy_tips)


def test_recommend_presets():
    base = {
        "width": 2000, "height": 1500, "is_gray": False, "sharpness": 300.0, "noise": 1.0,
        "color_cast": 2.0, "unique_colors": 0.4, "flat_fraction": 0.2,
        "faces": {"count": 0, "boxes": [], "smallest": None, "detector": "x"},
        "exposure": {"mean": 0.5, "dark": 0.0, "bright": 0.0, "low": 0.05, "high": 0.95, "contrast": 0.9},
    }  # fmt: skip
    assert analysis.suggested_preset(base) == "quick"
    faces = dict(base, faces={"count": 2, "boxes": [], "smallest": 60, "detector": "x"})
    assert analysis.suggested_preset(faces) == "portrait-restore"
    drawing = dict(base, unique_colors=0.01, flat_fraction=0.8)
    assert analysis.suggested_preset(drawing) == "anime-upscale"
    assert analysis.suggested_preset(dict(base, width=400, height=300)) == "upscale-x4"


def test_anime_like_frame_is_recognised():
    img = np.full((300, 400, 3), (200, 230, 250), np.uint8)
    cv2.circle(img, (200, 150), 80, (40, 120, 230), -1)
    cv2.circle(img, (200, 150), 80, (20, 20, 20), 3)
    cv2.rectangle(img, (20, 200), (120, 280), (90, 160, 60), -1)
    result = analysis.analyse(Image(img), faces=False)
    assert analysis.suggested_preset(result) == "anime-upscale"


# -- quality_score ------------------------------------------------------------------------------


def test_quality_score_identical_is_unchanged():
    img = photo()
    q = score.quality_score(img, img.copy())
    assert q["verdict"] == "unchanged" and q["problems"] == [] and q["score"] == 50.0
    assert q["fidelity"]["ssim"] == pytest.approx(1.0)


def test_quality_score_flags_blank_result():
    img = photo()
    q = score.quality_score(Image(img), Image(np.full_like(img, 128)))
    assert q["verdict"] == "worse" and q["score"] < 20
    assert any("blank" in p for p in q["problems"])


def test_quality_score_flags_colour_shift():
    img = photo()
    shifted = np.clip(img.astype(np.int16) + (0, 0, 60), 0, 255).astype(np.uint8)  # much redder
    q = score.quality_score(img, shifted)
    assert q["verdict"] == "worse"
    assert any("colour shifted" in p and "auto_color.strength" in p for p in q["problems"])


def test_quality_score_flags_blur_and_oversharpening():
    img = photo()
    q = score.quality_score(img, cv2.GaussianBlur(img, (0, 0), 2.5))
    assert q["verdict"] == "worse" and any("blurrier" in p for p in q["problems"])
    soft = cv2.GaussianBlur(img, (0, 0), 1.0).astype(np.float32)
    harsh = np.clip(soft * 4 - cv2.GaussianBlur(soft, (0, 0), 2) * 3, 0, 255).astype(np.uint8)
    q = score.quality_score(soft.astype(np.uint8), harsh)
    assert q["verdict"] == "worse" and any("over-sharpened" in p for p in q["problems"])


def test_quality_score_sees_denoising_as_improvement():
    clean = photo()
    dirty = noisy(clean, 12)
    q = score.quality_score(dirty, clean)
    assert q["components"]["noise"] > 0.5
    assert q["verdict"] == "improved" and q["score"] > 50


def test_quality_score_compares_an_upscaled_result_at_the_input_size():
    img = photo()
    up = cv2.resize(img, (640, 512), interpolation=cv2.INTER_CUBIC)
    q = score.quality_score(img, Image(up.astype(np.uint16) * 257))
    assert q["fidelity"]["ssim"] > 0.9 and q["verdict"] != "worse"


# -- calibration: the score orders degraded sets and flags known-bad results -----------------


def _clean_photos() -> dict[str, np.ndarray]:
    skdata = pytest.importorskip("skimage.data")  # public-domain photos that ship offline
    return {
        "astronaut": cv2.cvtColor(skdata.astronaut(), cv2.COLOR_RGB2BGR),
        "camera": cv2.cvtColor(skdata.camera(), cv2.COLOR_GRAY2BGR),
    }


def _degrade(img: np.ndarray, kind: str, level: int) -> np.ndarray:
    if kind == "blur":
        return cv2.GaussianBlur(img, (0, 0), (1.0, 2.0, 3.0)[level])
    if kind == "noise":
        return noisy(img, (5, 15, 30)[level], seed=level)
    if kind == "jpeg":
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, (60, 25, 8)[level]])
        return cv2.imdecode(buf, cv2.IMREAD_COLOR)
    factor = (2, 3, 4)[level]  # downscale, then back up: detail lost for good
    h, w = img.shape[:2]
    small = cv2.resize(img, (w // factor, h // factor), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


@pytest.mark.parametrize("kind", ["blur", "noise", "jpeg", "downscale"])
def test_score_orders_increasingly_degraded_results(kind):
    for name, clean in _clean_photos().items():
        scores = [score.quality_score(clean, clean)["score"]]
        verdicts = []
        for level in range(3):
            q = score.quality_score(clean, _degrade(clean, kind, level))
            scores.append(q["score"])
            verdicts.append(q["verdict"])
        assert scores == sorted(scores, reverse=True) and len(set(scores)) == 4, (name, scores)
        # the two stronger degradations are always called worse than the clean input
        assert verdicts[1:] == ["worse", "worse"], (name, verdicts)


def _agrees(q: dict) -> bool:
    before, after, verdict = q["score_before"], q["score"], q["verdict"]
    if abs((after - before) - q["gain"]) > 0.15:
        return False
    if verdict == "improved":
        return after > before
    if verdict == "worse":
        return after <= before
    return abs(after - before) <= 3.05


def test_every_verdict_agrees_with_the_two_scores_shown():
    """improved => the result scores higher than its input, worse => not higher, unchanged
    => within 3 points; over degradations, restorations, enhancements and no change."""
    pairs = []
    for clean in _clean_photos().values():
        pairs.append((clean, clean))
        for kind in ("blur", "noise", "jpeg", "downscale"):
            for level in range(3):
                bad = _degrade(clean, kind, level)
                pairs += [(clean, bad), (bad, clean)]
        sharpened = cv2.addWeighted(clean, 1.8, cv2.GaussianBlur(clean, (0, 0), 1.5), -0.8, 0)
        brighter = np.clip(clean.astype(np.int16) + 25, 0, 255).astype(np.uint8)
        pairs += [(clean, sharpened), (clean, brighter), (brighter, clean)]
        pairs.append((clean, cv2.resize(clean, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)))
    seen = set()
    for before, after in pairs:
        q = score.quality_score(before, after)
        assert _agrees(q), {k: q[k] for k in ("score_before", "score", "gain", "verdict")}
        seen.add(q["verdict"])
    assert seen == {"improved", "unchanged", "worse"}  # the set exercises all three


def test_an_inpainted_area_is_judged_as_a_fill_not_as_a_change_to_the_picture():
    clean = _clean_photos()["astronaut"]
    mark = np.zeros(clean.shape[:2], np.uint8)
    cv2.putText(mark, "PROOF", (60, 300), cv2.FONT_HERSHEY_DUPLEX, 3.0, 255, 9)
    marked = clean.copy()
    marked[mark > 0] = (0.4 * marked[mark > 0] + 0.6 * 255).astype(np.uint8)
    mask = cv2.dilate(mark, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5)))
    removed = cv2.inpaint(marked, mask, 3, cv2.INPAINT_TELEA)
    # Compared as a whole picture, removing the watermark reads as lost detail: "worse".
    assert score.quality_score(marked, removed)["verdict"] == "worse"
    # Told what was filled: the rest of the picture is untouched and the fill is plausible.
    q = score.quality_score(marked, removed, filled=mask)
    assert q["verdict"] != "worse" and q["problems"] == [], q["problems"]
    assert q["fidelity"]["ssim"] > 0.99 and q["fill"]["implausible"] == ""
    assert 0.03 < q["fill"]["area"] < 0.1
    # A fill that stands out is a problem of its own: a wide smeared area on texture, and a
    # patch of another colour.
    blob = np.zeros(clean.shape[:2], np.uint8)
    cv2.circle(blob, (380, 380), 90, 255, -1)
    smeared = cv2.inpaint(clean, blob, 3, cv2.INPAINT_TELEA)
    q = score.quality_score(clean, smeared, filled=blob)
    assert q["verdict"] == "worse" and "surroundings' detail" in q["fill"]["implausible"]
    assert any("filled area stands out" in p for p in q["problems"])
    patch = clean.copy()
    patch[mask > 0] = (40, 200, 40)
    q = score.quality_score(marked, patch, filled=mask)
    assert "colour differs" in q["fill"]["implausible"] and q["verdict"] == "worse"


def test_restoring_a_degraded_photo_is_an_improvement():
    clean = _clean_photos()["camera"]
    for kind in ("blur", "noise", "downscale"):
        q = score.quality_score(_degrade(clean, kind, 1), clean)
        assert q["verdict"] == "improved" and q["problems"] == [], (kind, q["problems"])
        assert q["quality"]["after"] > q["quality"]["before"]


def test_known_bad_results_on_a_photo_are_flagged():
    clean = _clean_photos()["astronaut"]
    shifted = np.clip(clean.astype(np.int16) + (-40, 0, 50), 0, 255).astype(np.uint8)
    q = score.quality_score(clean, shifted)
    assert q["verdict"] == "worse" and any("colour shifted" in p for p in q["problems"])
    q = score.quality_score(clean, np.zeros_like(clean))
    assert q["verdict"] == "worse" and q["score"] == 0.0
    assert any("blank" in p for p in q["problems"])


def test_niqe_reads_clean_photos_as_more_natural():
    clean = _clean_photos()["astronaut"]
    v_clean = measures.niqe(clean)
    assert v_clean is not None and v_clean < measures.niqe(_degrade(clean, "blur", 2))
    assert measures.niqe(clean[:100, :100]) is None  # too small for NIQE's 96 px blocks
    assert measures.niqe(np.full((300, 300, 3), 90, np.uint8)) is None  # nothing to measure
    q = score.image_quality(clean)
    assert 0 < q["quality"] <= 100 and q["niqe"] == pytest.approx(v_clean, abs=1e-3)


def test_tile_seams_are_found_and_reported():
    clean = _clean_photos()["astronaut"]
    assert measures.tile_seams(clean) == [] and measures.tile_seams(clean, period=128) == []
    seamed = clean.astype(np.float32)
    seamed[:, 256:] *= 0.88  # the right column of 128 px tiles came out darker
    seamed[256:, :] *= 0.9  # and the bottom row of tiles too
    seamed = np.clip(seamed + 0.5, 0, 255).astype(np.uint8)
    found = measures.tile_seams(seamed, period=128)
    assert found == [("x", 256), ("y", 256)]
    q = score.quality_score(clean, seamed, seams=found)
    assert q["verdict"] == "worse" and any("tile seams at x=256, y=256" in p for p in q["problems"])


def test_hints_for_unrestored_faces_and_excessive_upscaling():
    img = photo()
    up = cv2.resize(img, (160 * 6, 128 * 6), interpolation=cv2.INTER_CUBIC)
    q = score.quality_score(img, up, faces_found=2, faces_restored=False)
    assert any("2 face(s) found" in h and "restore_faces" in h for h in q["hints"])
    assert any("upscaled 6.0x" in h for h in q["hints"])
    assert score.quality_score(img, img, faces_found=2, faces_restored=True)["hints"] == []


def test_a_redrawn_picture_is_restyled_not_worse_and_its_composition_is_shown():
    """A stylised photo judged as a repair is "worse" (colours, texture and sharpness all
    changed); judged as the drawing the recipe asked for it is "restyled", with the
    composition it kept, and an unrelated picture shows that it kept none."""
    photos = _clean_photos()
    clean = photos["astronaut"]
    drawn = cv2.stylization(clean, sigma_s=60, sigma_r=0.45)
    assert score.quality_score(clean, drawn)["verdict"] == "worse"
    q = score.quality_score(clean, drawn, redrawn=True)
    assert q["verdict"] == "restyled" and q["problems"] == []
    assert q["fidelity"]["composition"] > 0.6
    other = next(p for name, p in photos.items() if name != "astronaut")
    other = cv2.resize(other, (clean.shape[1], clean.shape[0]))
    assert score.quality_score(clean, other, redrawn=True)["fidelity"]["composition"] < 0.3
    blank = score.quality_score(clean, np.full_like(clean, 128), redrawn=True)
    assert blank["verdict"] == "worse" and any("blank" in p for p in blank["problems"])


def test_the_review_of_a_stylize_recipe_says_restyled():
    from retouch.lib.phases.review import score_result
    from retouch.lib.recipe import recipe_from_dict

    clean = _clean_photos()["astronaut"]
    recipe = recipe_from_dict({"name": "s", "steps": [{"op": "stylize"}]})
    drawn = cv2.stylization(clean, sigma_s=60, sigma_r=0.45)
    scores, _, _ = score_result(Image(clean), Image(drawn), recipe)
    assert scores["verdict"] == "restyled"
