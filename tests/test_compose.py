"""docker-compose.yml's structure (no Docker engine runs here, so the file is checked, not started)."""

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_postgres_service():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    pg = compose["services"]["postgres"]
    assert pg["image"].startswith("postgres:")
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])
    assert any(v.startswith("pgdata:") for v in pg["volumes"]) and "pgdata" in compose["volumes"]
    # the password comes from the environment, and the port is published on loopback only
    assert pg["environment"]["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD")
    assert all(p.startswith("127.0.0.1:") for p in pg["ports"])


def test_env_example_names_every_variable_and_no_secret():
    text = (ROOT / "docker-compose.yml").read_text()
    example = dict(line.split("=", 1) for line in (ROOT / ".env.example").read_text().splitlines()
                   if line and not line.startswith("#"))
    for name in ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB", "POSTGRES_PORT"):
        assert f"${{{name}" in text and name in example
    assert example["POSTGRES_PASSWORD"] == ""
