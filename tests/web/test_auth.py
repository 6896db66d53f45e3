"""Token authentication, the page and schema without a CDN, and the refusal to listen
beyond loopback without a token."""

from __future__ import annotations

from typer.testing import CliRunner

from retouch.cli.main import app as cli


def test_token_is_required_on_the_api_when_set(serve):
    web = serve(token="s3cret-token")
    c = web.client
    refused = c.get("/api/batches")
    assert refused.status_code == 401
    assert "token" in refused.json()["detail"]
    assert refused.headers["www-authenticate"] == "Bearer"
    assert c.get("/api/batches", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert c.get("/api/batches", params={"token": "wrong"}).status_code == 401
    assert c.get("/api/batches/b-x/zip").status_code == 401  # downloads too

    ok = c.get("/api/batches", headers={"Authorization": "Bearer s3cret-token"})
    assert ok.status_code == 200 and ok.json() == []
    assert c.get("/api/batches", params={"token": "s3cret-token"}).status_code == 200
    assert c.get("/api/presets", params={"token": "s3cret-token"}).status_code == 200
    # Open without a token: health, the page, the schema.
    assert c.get("/api/health").json()["ok"] is True
    assert c.get("/").status_code == 200
    assert c.get("/openapi.json").status_code == 200


def test_token_from_the_setting(serve, monkeypatch):
    from retouch.lib.settings import reload_settings

    monkeypatch.setenv("RETOUCH_WEB_TOKEN", "from-env")
    reload_settings()
    c = serve().client
    assert c.get("/api/batches").status_code == 401
    assert c.get("/api/batches", params={"token": "from-env"}).status_code == 200


def test_no_token_on_loopback_means_open(serve):
    assert serve().client.get("/api/batches").status_code == 200


def test_listening_beyond_loopback_without_a_token_is_refused():
    result = CliRunner().invoke(cli, ["web", "--host", "0.0.0.0", "--port", "8765"])
    assert result.exit_code == 1
    assert "needs a token" in result.output and "RETOUCH_WEB_TOKEN" in result.output


def test_no_cdn_docs_and_a_described_api(serve):
    c = serve().client
    assert c.get("/docs").status_code == 404
    assert c.get("/redoc").status_code == 404
    schema = c.get("/openapi.json").json()
    paths = schema["paths"]
    for path in (
        "/api/health",
        "/api/presets",
        "/api/batches",
        "/api/batches/from-uris",
        "/api/batches/{batch_id}",
        "/api/batches/{batch_id}/results",
        "/api/batches/{batch_id}/results/{index}",
        "/api/batches/{batch_id}/thumbs/{index}/{label}",
        "/api/batches/{batch_id}/zip",
        "/api/batches/{batch_id}/report",
        "/api/batches/{batch_id}/regenerate",
        "/api/batches/{batch_id}/cancel",
    ):
        assert path in paths, path
    upload = paths["/api/batches"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert upload["schema"]["properties"]["files"]["items"]["format"] == "binary"
    assert "cdn" not in c.get("/").text.lower()


def test_presets_carry_each_steps_params_and_schema(serve):
    presets = {p["name"]: p for p in serve().client.get("/api/presets").json()}
    assert {"quick", "web-ready", "portrait-restore"} <= set(presets)
    sharpen = next(s for s in presets["quick"]["steps"] if s["op"] == "sharpen")
    assert sharpen["params"]["amount"] == 0.6
    assert "amount" in sharpen["schema"]["properties"]


def test_the_printed_address_carries_the_token_intact():
    from urllib.parse import parse_qs, urlsplit

    from retouch.cli.web import page_url

    token = "a&b#c+d/e=f%"
    url = page_url("0.0.0.0", 8080, token)
    parts = urlsplit(url)
    assert (parts.hostname, parts.port, parts.fragment) == ("0.0.0.0", 8080, "")
    assert parse_qs(parts.query) == {"token": [token]}
    assert page_url("127.0.0.1", 8765, None) == "http://localhost:8765/"
    assert urlsplit(page_url("::", 8765, "t")).hostname == "::"
