"""Batches from storage URIs and uploads with masks (queued by a runner that starts nothing,
so no Prefect run is needed to see what each batch would run on)."""

from __future__ import annotations

import shutil

import pytest

from tests.web.conftest import SAMPLES, sample_files


@pytest.fixture
def queued(serve):
    """A server whose runner keeps every batch queued."""
    from retouch.lib.settings import get_settings
    from retouch.web.runner import Runner

    runner = Runner(get_settings().home / "web" / "batches", max_running=0)
    return serve(runner=runner)


def test_from_uris_reads_local_folders_only_under_the_roots(queued, monkeypatch, tmp_path):
    from retouch.lib.settings import reload_settings

    shoot = tmp_path / "shoot"
    (shoot / "day2").mkdir(parents=True)
    shutil.copy(SAMPLES / "rocket.jpg", shoot / "rocket.jpg")
    shutil.copy(SAMPLES / "coffee.jpg", shoot / "day2" / "coffee.jpg")
    (shoot / "notes.txt").write_text("not a photo")
    c = queued.client

    refused = c.post("/api/batches/from-uris", json={"sources": [str(shoot)]})
    assert refused.status_code == 400
    assert str(shoot) in refused.json()["detail"]
    assert "RETOUCH_WEB_SOURCE_ROOTS" in refused.json()["detail"]
    assert c.get("/api/batches").json() == []

    monkeypatch.setenv("RETOUCH_WEB_SOURCE_ROOTS", f'["{tmp_path}"]')
    reload_settings()
    created = c.post(
        "/api/batches/from-uris",
        json={"sources": [str(shoot)], "preset": "web-ready", "overrides": {"fit.max_side": 99}},
    )
    assert created.status_code == 201, created.text
    batch = created.json()
    assert batch["state"] == "queued"
    assert [i["name"] for i in batch["images"]] == ["day2/coffee.jpg", "rocket.jpg"]
    assert batch["skipped"] == [
        {"name": str(shoot / "notes.txt"), "reason": "not an image file extension (.txt)"}
    ]
    runner = queued.runner
    command = runner.command(runner.batches[batch["id"]], runner.queue[0][1])
    assert command[command.index("run") + 1] == str(shoot)
    assert "fit.max_side=99" in command

    # Several sources become one list file; a missing one is named.
    two = c.post(
        "/api/batches/from-uris",
        json={"sources": [str(shoot / "rocket.jpg"), str(shoot / "day2" / "coffee.jpg")]},
    )
    assert two.status_code == 201, two.text
    assert sorted(i["name"] for i in two.json()["images"]) == ["coffee.jpg", "rocket.jpg"]
    gone = c.post("/api/batches/from-uris", json={"sources": [str(tmp_path / "nowhere")]})
    assert gone.status_code == 400 and "nowhere" in gone.json()["detail"]
    secret = c.post(
        "/api/batches/from-uris", json={"sources": ["s3://AKIAEXAMPLE:hunter2@bucket/in/"]}
    )
    assert secret.status_code == 400 and "hunter2" not in secret.text
    assert len(c.get("/api/batches").json()) == 2


def test_masks_are_kept_beside_the_images_for_the_run(queued):
    created = queued.client.post(
        "/api/batches",
        files=sample_files(["rocket.jpg"], folder="set/")
        + [("masks", ("rocket.png", (SAMPLES / "camera.png").read_bytes()))],
        data={"preset": "remove-objects-fast"},
    )
    assert created.status_code == 201, created.text
    runner = queued.runner
    batch = runner.batches[created.json()["id"]]
    assert (batch.folder / "masks" / "rocket.png").read_bytes() == (
        SAMPLES / "camera.png"
    ).read_bytes()
    command = runner.command(batch, runner.queue[0][1])
    assert command[command.index("--masks") + 1] == str(batch.folder / "masks")
    assert command[command.index("--preset") + 1] == "remove-objects-fast"


def test_from_uris_cannot_reach_past_the_roots(queued, monkeypatch, tmp_path):
    """Other URL kinds, chained URLs and list files naming outside files are refused, so the
    server fetches nothing the caller could not name directly."""
    from retouch.lib.settings import reload_settings

    root = tmp_path / "root"
    root.mkdir()
    outside = tmp_path / "private"
    outside.mkdir()
    shutil.copy(SAMPLES / "rocket.jpg", outside / "secret.jpg")
    shutil.copy(SAMPLES / "coffee.jpg", root / "coffee.jpg")
    (root / "list.txt").write_text(f"{root / 'coffee.jpg'}\n{outside / 'secret.jpg'}\n")
    shutil.make_archive(str(outside / "private"), "zip", outside)
    monkeypatch.setenv("RETOUCH_WEB_SOURCE_ROOTS", f'["{root}"]')
    reload_settings()
    c = queued.client
    cases = {
        "http://169.254.169.254/latest/meta-data/list.txt": "reads only local paths",
        f"zip://secret.jpg::{outside / 'private.zip'}": "reads only local paths",
        f"simplecache::file://{outside}/": "reads only local paths",
        f"file://{outside}/": "RETOUCH_WEB_SOURCE_ROOTS",
        str(root / "list.txt"): "RETOUCH_WEB_SOURCE_ROOTS",
    }
    for source, words in cases.items():
        answer = c.post("/api/batches/from-uris", json={"sources": [source]})
        assert answer.status_code == 400, (source, answer.text)
        assert words in answer.json()["detail"], (source, answer.text)
    listed = c.post("/api/batches/from-uris", json={"sources": [str(root / "list.txt")]})
    assert str(outside / "secret.jpg") in listed.json()["detail"]
    assert "list.txt" in listed.json()["detail"]
    assert c.get("/api/batches").json() == []
    assert [p.name for p in queued.runner.root.iterdir()] == []
