"""docker-compose.yml, the Dockerfile and .env.example (no Docker engine runs here: checked, not started)."""

import re
import shlex
from pathlib import Path

import pytest
import yaml

from tcnsearch.cli import cli

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


GPU_WORKERS = [f"ray-worker-gpu{i}" for i in range(8)]
WORKERS = [*GPU_WORKERS, "ray-worker-cpu"]


def test_the_services_of_the_cluster():
    assert set(SERVICES) == {"postgres", "ray-head", "dashboard", "tcnsearch", *WORKERS}
    for name in ("ray-head", "dashboard", "tcnsearch", *WORKERS):
        build = SERVICES[name]["build"]
        assert build["context"] == "." and SERVICES[name]["image"].startswith("${TCNSEARCH_IMAGE")
        assert build["args"]["TORCH_CUDA"].startswith("${TORCH_CUDA")  # the image's CUDA build is a choice


def test_postgres_is_healthchecked_kept_on_a_volume_and_loopback_only():
    pg = SERVICES["postgres"]
    assert pg["image"].startswith("postgres:")
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])
    assert any(v.startswith("pgdata:") for v in pg["volumes"]) and "pgdata" in COMPOSE["volumes"]
    assert pg["environment"]["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")


def test_ray_head_and_workers():
    head = SERVICES["ray-head"]
    assert "ray start --head" in head["command"] and "--port=6379" in head["command"]
    assert "ray status" in " ".join(head["healthcheck"]["test"])
    assert head["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in WORKERS:
        worker = SERVICES[name]
        assert "--address=ray-head:6379" in worker["command"]
        assert worker["depends_on"]["ray-head"]["condition"] == "service_healthy"
    assert "--num-gpus=0" in SERVICES["ray-worker-cpu"]["command"]
    assert "deploy" not in SERVICES["ray-worker-cpu"] or "resources" not in SERVICES["ray-worker-cpu"]["deploy"]


def _devices(name: str) -> list[str]:
    (device,) = SERVICES[name]["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"] and "count" not in device
    assert "--num-gpus=1" in SERVICES[name]["command"]
    return device["device_ids"]


@pytest.mark.parametrize("n", range(1, 9))
def test_each_gpu_worker_gets_a_gpu_of_its_own(n):
    """COMPOSE_PROFILES=gpus-N starts N workers on GPUs 0..N-1, one each (a scaled service with `count: 1`
    would give every replica the same first GPU)."""
    started = [w for w in GPU_WORKERS if f"gpus-{n}" in SERVICES[w]["profiles"]]
    assert sorted(d for w in started for d in _devices(w)) == [str(i) for i in range(n)]
    assert all("profiles" not in SERVICES[s] for s in ("postgres", "ray-head", "dashboard"))


def test_every_container_reaches_the_one_database_without_a_written_secret():
    for name in ("ray-head", "dashboard", "tcnsearch", *WORKERS):
        url = SERVICES[name]["environment"]["TCNSEARCH_STORAGE"]
        assert url.startswith("postgresql+psycopg://") and "@postgres:5432/" in url
        assert "${POSTGRES_PASSWORD:?" in url
    assert SERVICES["tcnsearch"]["environment"]["TCNSEARCH_RAY_ADDRESS"] == "ray-head:6379"


def test_only_the_dashboards_and_the_database_are_published_on_loopback():
    published = {name: s.get("ports", []) for name, s in SERVICES.items()}
    assert {n for n, p in published.items() if p} == {"postgres", "ray-head", "dashboard"}
    assert all(p.startswith("127.0.0.1:") for ports in published.values() for p in ports)
    assert not any(":6379" in p for ports in published.values() for p in ports)  # Ray's GCS stays inside


def test_the_commands_the_containers_run_parse():
    argv = shlex.split(SERVICES["dashboard"]["command"])
    assert argv[:2] == ["tcnsearch", "dashboard"]
    ctx = cli.get_command(None, "dashboard").make_context("dashboard", argv[2:])
    assert ctx.params["host"] == "0.0.0.0" and ctx.params["port"] == 8080  # inside; published on loopback
    assert SERVICES["tcnsearch"]["entrypoint"] == ["tcnsearch"]
    assert set(cli.commands) >= {"profile", "study", "train", "dashboard", "report", "data"}


def test_env_example_names_every_variable_and_no_secret():
    text = (ROOT / "docker-compose.yml").read_text()
    used = set(re.findall(r"\$\{([A-Z_]+)", text))
    example = dict(line.split("=", 1) for line in (ROOT / ".env.example").read_text().splitlines()
                   if line and not line.startswith("#"))
    assert used <= set(example), used - set(example)
    assert example["POSTGRES_PASSWORD"] == ""


def test_dockerfile_installs_the_chosen_torch_build_first_and_the_package():
    text = (ROOT / "Dockerfile").read_text()
    assert "ARG TORCH_VERSION=2.13.0" in text and "ARG TORCH_CUDA=" in text
    install = text.index('"torch==${TORCH_VERSION}" --index-url "https://download.pytorch.org/whl/${TORCH_CUDA}"')
    assert install < text.index("pip install --no-cache-dir -e .")
    for build in ("cu130", "cu128", "cu126", "cpu"):  # each build the README's table names is explained here
        assert f"TORCH_CUDA={build}" in text
    assert "COPY studies" in text and "COPY tcnsearch" in text
    assert ".venv" in (ROOT / ".dockerignore").read_text()


def test_checkpoints_and_weights_live_where_every_node_reaches():
    """Tune's checkpoints are written by a worker and read back on a retry on any node; the kept weights are
    written by the driver and served by the dashboard: each is one folder every container mounts."""
    for name in ("ray-head", "dashboard", "tcnsearch", *WORKERS):
        env, volumes = SERVICES[name]["environment"], SERVICES[name]["volumes"]
        assert env["TCNSEARCH_RUNS"] == "/runs" and "${RUNS_DIR:-runs}:/runs" in volumes
        assert env["TCNSEARCH_ARTIFACTS"] == "/artifacts" and "${ARTIFACTS_DIR:-artifacts}:/artifacts" in volumes
    assert {"runs", "artifacts"} <= set(COMPOSE["volumes"])
    study, dashboard = (next(p for p in cli.commands[c].params if p.name == "artifacts") for c in ("study",
                                                                                                  "dashboard"))
    runs = next(p for p in cli.commands["study"].params if p.name == "runs")
    assert study.envvar == dashboard.envvar == "TCNSEARCH_ARTIFACTS" and runs.envvar == "TCNSEARCH_RUNS"
