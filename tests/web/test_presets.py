"""What the page is told about each preset before anything is uploaded: whether it can run
here (its model weights), its export settings; and a batch that cannot run is refused
before it exists."""

from __future__ import annotations

import urllib.error

from tests.web.conftest import sample_files


def _presets(client) -> dict[str, dict]:
    answer = client.get("/api/presets")
    assert answer.status_code == 200, answer.text
    return {p["name"]: p for p in answer.json()}


def test_presets_say_which_can_run_and_why_not(serve, retouch_home):
    """Offline (as the tests run): presets whose weights are not on the server are marked
    unavailable, naming the files and how to provide them; one file put in place makes
    its preset available."""
    from retouch.lib.models import fetch

    web = serve()
    presets = _presets(web.client)
    assert presets["quick"]["available"] is True and presets["quick"]["weights"] == []
    assert presets["web-ready"]["available"] is True
    x4 = presets["upscale-x4"]
    assert x4["available"] is False
    assert [w["filename"] for w in x4["weights"]] == ["RealESRGAN_x4plus.pth"]
    assert x4["weights"][0]["source"] is None
    assert "RealESRGAN_x4plus.pth" in x4["unavailable"]
    assert "retouch models pull realesrgan-x4plus" in x4["unavailable"]
    portrait = presets["portrait-restore"]
    assert portrait["available"] is False
    assert {"GFPGANv1.4.pth", "detection_Resnet50_Final.pth"} <= {
        w["filename"] for w in portrait["weights"]
    }

    # The upload is refused with the same reason; no batch is made.
    refused = web.client.post(
        "/api/batches", files=sample_files(["chelsea.jpg"]), data={"preset": "upscale-x4"}
    )
    assert refused.status_code == 400
    assert "RealESRGAN_x4plus.pth" in refused.json()["detail"]
    assert web.client.get("/api/batches").json() == []

    folder = fetch.model_dir()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "RealESRGAN_x4plus.pth").write_bytes(b"weights")
    x4 = _presets(web.client)["upscale-x4"]
    assert x4["available"] is True and x4["weights"] == [] and x4["unavailable"] is None


def test_weights_that_cannot_be_fetched_refuse_the_upload(serve, retouch_home, monkeypatch):
    """Online but without a network: the preset is offered (its weights would be
    downloaded), and the upload is refused with the download's failure and the ways to
    provide the file, before a batch exists (never a batch stuck on waiting)."""
    from retouch.lib.models import fetch
    from retouch.lib.settings import reload_settings

    monkeypatch.setenv("RETOUCH_OFFLINE", "0")
    reload_settings()
    tried: list[str] = []

    def no_network(url, spec):
        tried.append(spec.filename)
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(fetch, "_download_url", no_network)
    web = serve()
    x4 = _presets(web.client)["upscale-x4"]
    assert x4["available"] is True
    assert [(w["filename"], w["source"]) for w in x4["weights"]] == [
        ("RealESRGAN_x4plus.pth", "url")
    ]
    assert tried == []  # listing the presets downloads nothing

    refused = web.client.post(
        "/api/batches", files=sample_files(["chelsea.jpg"]), data={"preset": "upscale-x4"}
    )
    assert refused.status_code == 400, refused.text
    detail = refused.json()["detail"]
    assert "RealESRGAN_x4plus.pth" in detail and "network unreachable" in detail
    assert "retouch models pull realesrgan-x4plus" in detail
    assert tried == ["RealESRGAN_x4plus.pth"]
    assert web.client.get("/api/batches").json() == []
    assert not list((retouch_home / "web" / "batches").glob(".staging-*"))
