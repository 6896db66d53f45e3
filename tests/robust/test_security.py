"""Hostile sources, names and credentials: nothing escapes the workspace or DEST, no
secret reaches what retouch prints or writes, no symlink leads out of a source folder."""

from __future__ import annotations

import io
import json
import os
import uuid
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage
from typer.testing import CliRunner

from retouch.cli.main import app
from retouch.lib import sources, storage
from retouch.lib.delivery.naming import is_safe_name
from retouch.lib.settings import reload_settings

RECIPE = """
name = "secure"
[[steps]]
op = "sharpen"
params = { amount = 0.5 }
[export]
format = "png"
"""


def _png(seed: int, w: int = 20, h: int = 14) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)
    buf = io.BytesIO()
    PILImage.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def _run(tmp_path: Path, *args: str) -> tuple[int, str]:
    recipe = tmp_path / "secure.toml"
    recipe.write_text(RECIPE)
    result = CliRunner().invoke(app, ["run", *args, "-p", str(recipe)], terminal_width=240)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def _zip_names(path: Path) -> list[str]:
    with zipfile.ZipFile(path) as zf:
        return sorted(zf.namelist())


def _files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def _escaped(root: Path, before: set[Path], dest: Path) -> set[Path]:
    """Files new under ``root`` that are neither in ``dest``, nor in the workspace (under
    RETOUCH_HOME), nor the test's own recipe."""
    return {
        p
        for p in _files_under(root) - before
        if not (p.is_relative_to(dest) or "retouch-home" in p.parts or p.name == "secure.toml")
    }


# -- ZIP sources ------------------------------------------------------------------------------


def test_zip_source_with_escaping_members_symlinks_and_a_bomb_is_contained(
    prefect_server, tmp_path, monkeypatch
):
    monkeypatch.setenv("RETOUCH_MAX_FILE_BYTES", str(2_000_000))
    reload_settings()
    marker = uuid.uuid4().hex[:8]
    archive = tmp_path / "in" / "shoot.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("good.png", _png(1))
        zf.writestr("sub/also-good.png", _png(2))
        zf.writestr(f"../escape-{marker}.png", _png(3))
        zf.writestr(f"sub/../../escape2-{marker}.png", _png(4))
        zf.writestr(f"/tmp/abs-{marker}.png", _png(5))
        link = zipfile.ZipInfo(f"link-{marker}.png")
        link.external_attr = (0o120777 << 16) | 0x20
        zf.writestr(link, "/etc/passwd")
        # 64 MB of zeros: about 64 kB compressed, far over the file-size limit.
        zf.writestr("bomb.png", b"\0" * (64 << 20))
    assert archive.stat().st_size < 1_000_000
    before = _files_under(tmp_path)
    dest = tmp_path / "out"

    code, output = _run(tmp_path, str(archive), "-o", str(dest))

    assert code == 2, output
    manifest = json.loads((dest / "manifest.json").read_text())
    status = {i["name"]: (i["status"], i["reason"]) for i in manifest["images"]}
    assert status["good.png"] == ("ok", None) and status["sub/also-good.png"] == ("ok", None)
    assert status["bomb.png"] == (
        "failed",
        "file is larger than the limit of 2000000 bytes (raise RETOUCH_MAX_FILE_BYTES to accept it)",
    )
    skipped = {
        s["uri"].split("::")[0].removeprefix("zip://"): s["reason"] for s in manifest["skipped"]
    }
    assert (
        skipped[f"../escape-{marker}.png"] == "unsafe member name (climbs out with '..'): not read"
    )
    assert skipped[f"sub/../../escape2-{marker}.png"] == (
        "unsafe member name (climbs out with '..'): not read"
    )
    assert skipped[f"/tmp/abs-{marker}.png"] == "unsafe member name (absolute path): not read"
    assert skipped[f"link-{marker}.png"] == "symbolic link inside the archive: not read"
    assert _zip_names(dest / "results.zip") == ["also-good.png", "good.png"]
    # Nothing was extracted anywhere: only the delivery and the workspace are new.
    assert _escaped(tmp_path, before, dest) == set()
    assert not any(marker in p.name for p in _files_under(tmp_path))
    assert not Path(f"/tmp/abs-{marker}.png").exists()


# -- names --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "template",
    [
        "../../x-{stem}.{ext}",
        "/tmp/abs-{stem}.{ext}",
        "{folder}/../../{stem}.{ext}",
        "..\\..\\{stem}.{ext}",
        "sub/./../../{stem}.{ext}",
    ],  # fmt: skip
)
def test_name_templates_never_leave_dest(prefect_server, tmp_path, template):
    src = tmp_path / "src"
    (src / "inner").mkdir(parents=True)
    (src / "a.png").write_bytes(_png(1))
    (src / "inner" / "b.png").write_bytes(_png(2))
    dest = tmp_path / "deep" / "er" / "out"
    before = _files_under(tmp_path)

    code, output = _run(
        tmp_path, str(src), "-o", str(dest), "--set", f"export.name_template={template}"
    )

    assert _escaped(tmp_path, before, dest) == set(), output
    assert not Path("/tmp/abs-a.png").exists()
    if code == 1:  # refused outright: the message says which template and why
        assert "name_template" in output or "template" in output, output
        return
    assert code == 0, output
    names = _zip_names(dest / "results.zip")
    assert len(names) == 2
    for name in names:
        assert is_safe_name(name) and ".." not in name.split("/") and not name.startswith("/")
    with zipfile.ZipFile(dest / "results.zip") as zf:
        target = tmp_path / "unpacked"
        zf.extractall(target)
    assert {p.resolve().is_relative_to(target.resolve()) for p in _files_under(target)} == {True}


def test_hostile_source_file_names_stay_inside_dest(prefect_server, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("..\\..\\evil.png", "-rf.png", "a:b?c*.png", " spaced .png", "new\nline.png"):
        (src / name).write_bytes(_png(len(name)))
    dest = tmp_path / "out"
    before = _files_under(tmp_path)

    code, output = _run(tmp_path, str(src), "-o", str(dest))

    assert code == 0, output
    names = _zip_names(dest / "results.zip")
    # The backslash name starts with a dot: a hidden file on this system, skipped as such.
    assert names == ["-rf.png", "a_b_c_.png", "newline.png", "spaced .png"]
    assert all(is_safe_name(n) for n in names)
    manifest = json.loads((dest / "manifest.json").read_text())
    assert [s["reason"] for s in manifest["skipped"]] == ["hidden file"]
    assert _escaped(tmp_path, before, dest) == set()


# -- credentials -----------------------------------------------------------------------------

SECRET_KEY = "robust/Secret+Value+1234567890abcdefghijkl"
ACCESS_KEY = "AKIAROBUSTTESTKEY0001"
PREFECT_KEY = "pnu_robustsecretprefectapikey1234567890"
URL_SECRET = "UrlSecretValue9876543210zyxw"


def _assert_clean(text: str, where: str) -> None:
    for secret in (SECRET_KEY, PREFECT_KEY, URL_SECRET, "Secret+Value", "robustsecret"):
        assert secret not in text, f"{secret!r} leaked into {where}"


def test_credentials_in_urls_never_appear_in_output(prefect_server, tmp_path, moto_s3):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.png").write_bytes(_png(1))
    bad_source = f"s3://AKIAURLKEY:{URL_SECRET}@bucket/in/"
    code, output = _run(tmp_path, bad_source, "-o", str(tmp_path / "out"))
    assert code == 1
    _assert_clean(output, "the CLI output (bad source)")

    bad_dest = f"s3://AKIAURLKEY:{URL_SECRET}@bucket/out/"
    code, output = _run(tmp_path, str(src), "-o", bad_dest)
    assert code == 1, output
    _assert_clean(output, "the CLI output (bad destination)")
    assert "***@bucket" in " ".join(output.split())
    for path in tmp_path.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".html", ".txt", ".log"):
            _assert_clean(path.read_text(errors="replace"), str(path))


def test_credentials_in_the_environment_never_appear_in_logs_manifest_report_or_artifacts(
    prefect_server, tmp_path, moto_s3, monkeypatch
):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("PREFECT_API_KEY", PREFECT_KEY)
    storage.reset_filesystems()
    bucket = f"creds-{uuid.uuid4().hex[:8]}"
    moto_s3.create_bucket(bucket)
    client = moto_s3.boto3_client()
    client.put_object(Bucket=bucket, Key="in/a.png", Body=_png(1))
    client.put_object(Bucket=bucket, Key="in/broken.png", Body=b"\x89PNG\r\n\x1a\n broken")

    code, output = _run(
        tmp_path, f"s3://{bucket}/in/", "-o", f"s3://{bucket}/out/", "--verbose", "--json"
    )
    storage.reset_filesystems()

    assert code == 2, output
    _assert_clean(output, "the CLI output")
    for key in ("out/manifest.json", "out/report.html"):
        body = client.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
        _assert_clean(body, key)
    manifest = json.loads(client.get_object(Bucket=bucket, Key="out/manifest.json")["Body"].read())
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as prefect:
        from prefect.client.schemas.sorting import ArtifactSort

        # Newest first: the session's server holds every earlier test's artifacts too.
        artifacts = prefect.read_artifacts(sort=ArtifactSort.CREATED_DESC, limit=200)
        mine = [a for a in artifacts if manifest["run_id"] in str(a.data)]
        assert mine, "the run published no artifact"
        for artifact in artifacts:
            _assert_clean(json.dumps(artifact.model_dump(mode="json")), f"artifact {artifact.key}")
        for run in prefect.read_flow_runs():
            params = json.dumps(run.parameters, default=str)
            for secret in (SECRET_KEY, PREFECT_KEY):
                assert secret not in params, f"leaked into flow run {run.name} parameters"


def test_credentials_in_a_destination_url_never_reach_the_prefect_server(
    prefect_server, tmp_path, moto_s3
):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.png").write_bytes(_png(1))
    code, _output = _run(tmp_path, str(src), "-o", f"s3://AKIAURLKEY:{URL_SECRET}@bucket/out/")
    assert code == 1
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as prefect:
        for run in prefect.read_flow_runs():
            _assert_clean(json.dumps(run.parameters, default=str), f"flow run {run.name}")


# -- symlinks out of a source ------------------------------------------------------------------


@pytest.fixture
def linked_source(tmp_path):
    """A source folder holding a real image, links to files and a folder outside it, and a
    link to a file inside it."""
    outside = tmp_path / "private"
    (outside / "more").mkdir(parents=True)
    (outside / "secret.png").write_bytes(_png(9))
    (outside / "more" / "other.png").write_bytes(_png(10))
    src = tmp_path / "src"
    src.mkdir()
    (src / "real.png").write_bytes(_png(1))
    os.symlink(outside / "secret.png", src / "leak.png")
    os.symlink(outside / "more", src / "leakdir")
    os.symlink(src / "real.png", src / "alias.png")
    return src, outside


def test_symlinks_out_of_a_source_folder_are_not_followed(prefect_server, tmp_path, linked_source):
    src, _outside = linked_source
    dest = tmp_path / "out"
    code, output = _run(tmp_path, str(src), "-o", str(dest))
    assert code == 0, output
    manifest = json.loads((dest / "manifest.json").read_text())
    assert sorted(i["name"] for i in manifest["images"]) == ["alias.png", "real.png"]
    skipped = {Path(s["uri"]).name: s["reason"] for s in manifest["skipped"]}
    assert skipped["leak.png"].startswith("symlink to a file outside the source folder")
    assert skipped["leakdir"].startswith("symlinked folder not followed")
    assert _zip_names(dest / "results.zip") == ["alias.png", "real.png"]

    # A glob over the same folder obeys the same rule.
    found = sources.discover(str(src / "*.png"))
    assert [i.name for i in found.items] == ["alias.png", "real.png"]


def test_following_symlinks_is_an_explicit_choice(linked_source):
    src, outside = linked_source
    found = sources.discover(str(src), follow_symlinks=True)
    assert sorted(i.name for i in found.items) == [
        "alias.png", "leak.png", "leakdir/other.png", "real.png"
    ]  # fmt: skip
    assert not sources.discover(str(src)).items[0].uri.startswith(str(outside))
