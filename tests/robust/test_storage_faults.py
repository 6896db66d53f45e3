"""S3 storage that fails in the middle of a run (a fault-injecting proxy in front of moto):
reads and writes retry, every image is delivered exactly once; storage down past the retry
budget fails the run with a message naming what is missing and saying a re-run resumes."""

from __future__ import annotations

import io
import json
import uuid
import zipfile

import numpy as np
import pytest
from PIL import Image as PILImage
from typer.testing import CliRunner

from retouch.cli.main import app
from retouch.lib import storage
from retouch.lib.settings import reload_settings
from retouch.lib.storage import TEMP_MARKER
from tests.faultproxy import FaultProxy, fault_proxy

COUNT = 8


@pytest.fixture
def proxied_s3(moto_s3, monkeypatch):
    """A fresh bucket with COUNT images under in/, reached through a FaultProxy."""
    bucket = f"faults-{uuid.uuid4().hex[:8]}"
    moto_s3.create_bucket(bucket)
    client = moto_s3.boto3_client()
    rng = np.random.default_rng(5)
    for i in range(COUNT):
        buf = io.BytesIO()
        PILImage.fromarray(rng.integers(0, 255, (20, 28, 3), dtype=np.uint8)).save(buf, "PNG")
        client.put_object(Bucket=bucket, Key=f"in/img{i:02d}.png", Body=buf.getvalue())
    with fault_proxy(moto_s3.endpoint_url) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        # Only retouch's own retries count here: botocore's are switched off.
        monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
        storage.reset_filesystems()
        yield bucket, client, proxy
    storage.reset_filesystems()


RECIPE = """
name = "faults"
[[steps]]
op = "sharpen"
params = { amount = 0.5 }
[export]
format = "jpg"
"""


def _run(bucket: str, recipe, dest: str = "out") -> tuple[int, str]:
    recipe.write_text(RECIPE)
    result = CliRunner().invoke(
        app, ["run", f"s3://{bucket}/in/", "-p", str(recipe), "-o", f"s3://{bucket}/{dest}/"],
        terminal_width=240,
    )  # fmt: skip
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def _delivered(client, bucket: str, dest: str = "out") -> tuple[list[str], dict, list[str]]:
    keys = sorted(
        o["Key"]
        for o in client.list_objects_v2(Bucket=bucket, Prefix=f"{dest}/").get("Contents", [])
    )
    manifest = json.loads(
        client.get_object(Bucket=bucket, Key=f"{dest}/manifest.json")["Body"].read()
    )
    data = client.get_object(Bucket=bucket, Key=f"{dest}/results.zip")["Body"].read()
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.testzip() is None
        members = [i.filename for i in zf.infolist()]
    return keys, manifest, members


@pytest.mark.parametrize("mode", ["503", "reset"])
def test_storage_fault_mid_run_is_retried_and_every_image_delivered_once(
    prefect_server, proxied_s3, monkeypatch, mode, tmp_path
):
    bucket, client, proxy = proxied_s3
    monkeypatch.setenv("RETOUCH_STORAGE_RETRIES", "5")
    reload_settings()
    # The endpoint goes down when the run starts reading the 4th image, for 1.5 s.
    proxy.fail(
        mode, seconds=1.5, trigger=lambda method, path: method == "GET" and "/in/img03" in path
    )

    code, output = _run(bucket, tmp_path / "r.toml")

    assert proxy.failed > 0, "no fault was injected"
    assert code == 0, output
    keys, manifest, members = _delivered(client, bucket)
    assert keys == [f"out/{n}" for n in ("manifest.json", "report.html", "results.zip")]
    expected = [f"img{i:02d}.jpg" for i in range(COUNT)]
    assert sorted(members) == expected  # each exactly once, no duplicate entries
    assert [i["name"] for i in manifest["images"]] == [f"img{i:02d}.png" for i in range(COUNT)]
    assert all(i["status"] == "ok" for i in manifest["images"])
    assert sorted(i["output_name"] for i in manifest["images"]) == expected


def test_storage_down_past_the_retry_budget_fails_naming_what_is_missing_then_resumes(
    prefect_server, proxied_s3, monkeypatch, tmp_path
):
    bucket, client, proxy = proxied_s3
    monkeypatch.setenv("RETOUCH_STORAGE_RETRIES", "1")
    reload_settings()
    # Every image is processed (workspace is local); the destination, checked writable
    # before the run (a temporary object), goes down at delivery and never comes back.
    proxy.fail(
        "503",
        trigger=lambda method, path: (
            method in ("PUT", "POST") and "/out/" in path and TEMP_MARKER not in path
        ),
    )

    code, output = _run(bucket, tmp_path / "r.toml")

    flat = " ".join(output.split())
    assert code == 1, output
    assert f"s3://{bucket}/out/results.zip" in flat
    assert "failed after 2 attempt(s)" in flat
    assert "Re-running the same command resumes where it stopped" in flat
    assert client.list_objects_v2(Bucket=bucket, Prefix="out/").get("KeyCount", 0) == 0

    # Storage is back: the same command delivers everything, reusing the processed images.
    proxy.heal()
    code, output = _run(bucket, tmp_path / "r.toml")
    assert code == 0, output
    keys, manifest, members = _delivered(client, bucket)
    assert sorted(members) == [f"img{i:02d}.jpg" for i in range(COUNT)]
    assert manifest["summary"]["reused"] == COUNT


def test_fault_proxy_counts_and_heals(moto_s3):
    import urllib.error
    import urllib.request

    with fault_proxy(moto_s3.endpoint_url) as proxy:
        assert isinstance(proxy, FaultProxy)
        proxy.fail("503", requests=2)
        codes = []
        for _ in range(3):
            try:
                with urllib.request.urlopen(proxy.url + "/moto-api/", timeout=5) as resp:
                    codes.append(resp.status)
            except urllib.error.HTTPError as exc:
                codes.append(exc.code)
        assert codes == [503, 503, 200]
        proxy.fail("reset")
        with pytest.raises(OSError):
            urllib.request.urlopen(proxy.url + "/moto-api/", timeout=5)
        proxy.heal()
        with urllib.request.urlopen(proxy.url + "/moto-api/", timeout=5) as resp:
            assert resp.status == 200
