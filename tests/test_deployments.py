"""prefect.yaml is valid: entrypoints load, parameters bind, schedules parse, and it deploys."""
from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SPEC = yaml.safe_load((REPO / "prefect.yaml").read_text())


def test_every_deployment_points_at_a_flow_with_matching_parameters():
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.flows import load_flow_from_entrypoint

    pools = {pool["name"] for pool in SPEC["definitions"]["work_pools"].values()}
    assert SPEC["deployments"]
    for deployment in SPEC["deployments"]:
        flow = load_flow_from_entrypoint(str(REPO / deployment["entrypoint"]))
        signature = inspect.signature(flow.fn)
        bound = signature.bind(**deployment["parameters"])  # raises on unknown or missing params
        assert (REPO / "experiments" / bound.arguments["experiment"]).is_dir()
        assert deployment["work_pool"]["name"] in pools
        for schedule in deployment["schedules"]:
            CronSchedule(cron=schedule["cron"], timezone=schedule.get("timezone"))
        assert deployment["concurrency_limit"] == {"limit": 1, "collision_strategy": "CANCEL_NEW"}


@pytest.mark.usefixtures("prefect_server")
def test_prefect_deploy_all_registers_the_scheduled_deployment():
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PREFECT_CLI_PROMPT": "false"}
    prefect = [sys.executable, "-m", "prefect"]
    subprocess.run(prefect + ["work-pool", "create", "evolveflow-local", "--type", "process", "--overwrite"],
                   cwd=REPO, env=env, check=True, capture_output=True, timeout=180)
    done = subprocess.run(prefect + ["--no-prompt", "deploy", "--all"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("evolve-search/circle-packing-nightly")
        assert deployment.parameters == {"experiment": "circle_packing", "rounds": 30}
        assert [s.schedule.cron for s in deployment.schedules] == ["0 18 * * *"]
        assert deployment.work_pool_name == "evolveflow-local"
        # one search per experiment: an overlapping run is cancelled, not Failed with a traceback
        assert deployment.global_concurrency_limit.limit == 1
        assert deployment.concurrency_options.collision_strategy.value == "CANCEL_NEW"


@pytest.mark.parametrize("api_url", [None, "http://127.0.0.1:9/api"])
def test_serve_without_a_reachable_server_exits_2_saying_what_to_start(tmp_path, api_url):
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(tmp_path)
    if api_url:
        env["PREFECT_API_URL"] = api_url
    done = subprocess.run([sys.executable, str(REPO / "deployments" / "serve.py"), "circle_packing"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.startswith("serve.py: error: ") and "prefect server start" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
