"""Schema-driven fuzzing of the API (schemathesis over /openapi.json): no input may cause a
server error, and every answer must match the schema the app publishes.

The app under test has a real runner that starts no process (``max_running=0``): a valid
upload becomes a queued batch instead of a Prefect run, so fuzzing stays fast. Random bytes
are never a decodable image anyway, and local paths in from-uris are refused unless listed
in RETOUCH_WEB_SOURCE_ROOTS (empty here). Two thirds of the generated batch ids are replaced
by the id of a real batch (a queued one, or a finished one with results), so the handlers of
an existing batch are fuzzed too, not only the 404s.

Each operation gets its own Hypothesis run over schemathesis's strategy for it (valid and
invalid inputs), bounded to a few dozen examples.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.web.conftest import sample_files, stored_batch

EXAMPLES = 20
# The fuzzed app requires a token, and every case carries it: the handlers are fuzzed, not
# only the refusal. (With a token the server also answers under any host name, such as the
# test client's "testserver"; without one it answers only loopback names.)
TOKEN = "fuzz-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def fuzzed_app(retouch_home, monkeypatch):
    import anyio
    import httpx

    from retouch.lib.settings import reload_settings
    from retouch.web.app import create_app
    from retouch.web.runner import Runner

    # Remote sources fail at once instead of waiting on a network this machine lacks.
    monkeypatch.setenv("RETOUCH_STORAGE_RETRIES", "0")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "fuzz")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "fuzz")
    reload_settings()
    root = retouch_home / "web" / "batches"
    # A finished batch too, so the downloads are fuzzed past their 409s.
    done = stored_batch(root, {"a.jpg": b"a" * 300, "sub/b, c.jpg": b"b" * 200})
    runner = Runner(root, max_running=0)
    runner.start()
    assert runner.get(done) is not None
    app = create_app(runner=runner, token=TOKEN)

    async def create() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://web") as client:
            return await client.post(
                "/api/batches", files=sample_files(["rocket.jpg"]), headers=AUTH
            )

    created = anyio.run(create)
    assert created.status_code == 201, created.text
    yield app, (created.json()["id"], done)
    runner.stop()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_api_never_answers_with_a_server_error(fuzzed_app, mode):
    app, known = fuzzed_app
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 12
    exercised: list[tuple[str, int]] = []
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def fuzz(case):
            params = case.path_parameters or {}
            if "batch_id" in params and len(str(params["batch_id"])) % 3 < 2:
                params["batch_id"] = known[len(str(params["batch_id"])) % 3]
            response = case.call_and_validate(
                headers=AUTH, checks=[not_a_server_error, response_schema_conformance]
            )
            exercised.append((case.operation.label, response.status_code))

        try:
            fuzz()
        except Unsatisfiable:
            # No invalid input exists for an operation without parameters (GET /api/health).
            assert mode is GenerationMode.NEGATIVE and not operation.path_parameters
    labels = {label for label, _ in exercised}
    assert len(labels) >= (len(operations) if mode is GenerationMode.POSITIVE else 9), labels
    assert max(code for _, code in exercised) < 500
    if mode is GenerationMode.POSITIVE:  # the token got every case past the authentication
        assert all(code != 401 for _, code in exercised), sorted(set(exercised))
    print(sorted(set(exercised)))
