"""The deployments as the server stores them: schedule, parameters, trigger, pool, queues."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from retouch.deployments.serve import ARRIVED_EVENT, TeamConfig


def _in_thread(fn, *args):
    # A thread of its own: Prefect builds deployments asynchronously when a loop is running.
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(fn, *args).result()


def test_without_inbox_there_is_no_schedule_but_the_arrival_trigger():
    from retouch.deployments.serve import deployments

    built = {d.name: d for d in _in_thread(deployments, TeamConfig())}
    assert built["enhance"].schedules == []
    (trigger,) = built["enhance"].triggers
    assert trigger.expect == {ARRIVED_EVENT}
    assert trigger.parameters["source"] == "{{ event.payload.source }}"
    # The same default preset as `retouch run`, by name (workers load it).
    assert trigger.parameters["preset"] == "quick" and "recipe" not in trigger.parameters
    schema = built["enhance"]._parameter_openapi_schema.properties
    assert schema["preset"]["default"] == "quick"
    assert {"quick", "web-ready", "upscale-x4"} <= set(schema["preset"]["enum"])


def test_applied_deployments_have_the_nightly_schedule_pool_and_queues(prefect_server, tmp_path):
    from prefect import get_client

    from retouch.deployments.deploy import apply

    inbox = str(tmp_path / "studio" / "inbox")
    config = TeamConfig(inbox=inbox, nightly_cron="30 1 * * *", preset="web-ready", pool="team")
    ids = _in_thread(apply, config)
    assert set(ids) == {"enhance", "regenerate"}
    # Applying again updates in place (same ids), and keeps one schedule.
    assert _in_thread(apply, config) == ids

    with get_client(sync_client=True) as client:
        enhance = client.read_deployment(ids["enhance"])
        (schedule,) = enhance.schedules
        assert schedule.schedule.cron == "30 1 * * *"
        assert schedule.schedule.timezone == "UTC"
        assert schedule.active
        params = schedule.parameters
        assert params["source"] == inbox
        assert params["dest"] == str(tmp_path / "studio" / "delivery" / "nightly")
        assert params["preset"] == "web-ready"
        assert enhance.work_pool_name == "team"
        assert enhance.work_queue_name == "bulk"
        assert enhance.entrypoint == "retouch.flows.enhance.enhance"
        props = enhance.parameter_openapi_schema["properties"]
        assert {"source", "dest", "preset", "overrides", "recipe", "options"} <= set(props)
        # The UI form: a preset list (not an empty custom recipe), fields described.
        assert "quick" in props["preset"]["enum"] and props["preset"]["default"] == "quick"
        assert "recipe" not in enhance.parameter_openapi_schema.get("required", [])
        assert "fsspec URL" in props["source"]["description"]
        assert "manifest.json" in props["dest"]["description"]
        # Plain fields (no null choice, which the UI shows as 'Property is type "None"'),
        # except the advanced full recipe.
        schema = enhance.parameter_openapi_schema
        nullable = [
            name
            for name, prop in [
                *props.items(),
                *schema["definitions"]["RunOptions"]["properties"].items(),
            ]
            if any(option.get("type") == "null" for option in prop.get("anyOf", []))
        ]
        assert nullable == ["recipe"]

        pool = client.read_work_pool("team")
        assert pool.type == "process"
        queues = {q.name: q.priority for q in client.read_work_queues(work_pool_name="team")}
        assert queues["urgent"] < queues["bulk"]

        automations = client.read_automations_by_name("enhance-on-arrival")
        assert len(automations) == 1
        (action,) = automations[0].actions
        assert action.deployment_id == ids["enhance"]
        assert action.parameters["dest"] == "{{ event.payload.dest }}"
