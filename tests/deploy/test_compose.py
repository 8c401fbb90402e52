"""docker-compose.yml is complete and consistent: checked statically (no Docker engine here)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml
from compose_spec import PyCompose

from orderflow.settings import Settings
from tests.deploy.cli_contract import check_invocation
from tests.deploy.support import DEPLOY, ROOT, load_yaml

COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = DEPLOY / "compose.env.example"
APP_SERVICES = ("migrate", "api", "relay", "worker")
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}
SECRET_VARIABLES = ("POSTGRES_PASSWORD", "RABBITMQ_DEFAULT_PASS", "GF_SECURITY_ADMIN_PASSWORD")


def compose() -> dict[str, Any]:
    document: dict[str, Any] = load_yaml(COMPOSE_FILE)
    return document


def services() -> dict[str, Any]:
    found: dict[str, Any] = compose()["services"]
    return found


def interpolate(text: str, values: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error}, as `docker compose` resolves them."""

    def resolve(match: re.Match[str]) -> str:
        name, operator, argument = match[1], match[2], match[3]
        if name in values:
            return values[name]
        assert operator == ":-", f"${{{name}}} is required and has no value"
        return argument

    return re.sub(r"\$\{([A-Z_][A-Z0-9_]*)(?:(:-|:\?)([^}]*))?\}", resolve, text)


def test_compose_file_satisfies_the_compose_specification() -> None:
    example = ENV_EXAMPLE.read_text()
    values = dict(re.findall(r"^([A-Z_][A-Z0-9_]*)=(\S*)", example, flags=re.MULTILINE))
    # YAML merge keys (<<) are resolved by the YAML loader, as Compose does, before validation.
    document = yaml.safe_load(interpolate(COMPOSE_FILE.read_text(), values))
    parsed = PyCompose.from_json(json.dumps(document))
    assert set(parsed.service_names()) == set(services())


def test_compose_spec_validation_rejects_an_unknown_condition() -> None:
    document = {"services": {"a": {"image": "x:1", "depends_on": {"b": {"condition": "up"}}}}}
    document["services"]["b"] = {"image": "x:1"}
    with pytest.raises(ValueError, match="service_healthy"):
        PyCompose.from_json(json.dumps(document))


def test_compose_runs_the_whole_system() -> None:
    expected = {"postgres", "rabbitmq", "redis", *APP_SERVICES, "prometheus", "grafana"}
    assert expected <= set(services())


def test_depends_on_names_existing_services_with_valid_conditions() -> None:
    all_services = services()
    for name, service in all_services.items():
        for dependency, spec in service.get("depends_on", {}).items():
            assert dependency in all_services, f"{name} depends on unknown {dependency}"
            condition = spec["condition"]
            assert condition in CONDITIONS, f"{name} -> {dependency}: {condition}"
            target = all_services[dependency]
            if condition == "service_healthy":
                assert "test" in target.get("healthcheck", {}), f"{dependency} has no healthcheck"
            if condition == "service_completed_successfully":
                assert target.get("restart") == "no", f"{dependency} is not a one-shot"


def test_app_processes_wait_for_the_migration_and_backing_services() -> None:
    all_services = services()
    for name in ("api", "relay", "worker"):
        depends = all_services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
        assert depends["postgres"]["condition"] == "service_healthy", name
        assert depends["rabbitmq"]["condition"] == "service_healthy", name
    assert all_services["migrate"]["command"] == ["migrate"]


def test_every_long_running_service_has_a_healthcheck() -> None:
    for name, service in services().items():
        if name == "migrate":
            continue
        assert "test" in service.get("healthcheck", {}), f"{name} has no healthcheck"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_services_set_the_settings_the_app_reads(name: str) -> None:
    service = services()[name]
    environment = service["environment"]
    fields = {f"ORDERFLOW_{field.upper()}" for field in Settings.model_fields}
    for variable in environment:
        assert variable in fields, f"{name}: {variable} is not a setting of orderflow"
    for required in ("DATABASE_URL", "RABBITMQ_URL", "REDIS_URL"):
        assert f"ORDERFLOW_{required}" in environment, f"{name} lacks ORDERFLOW_{required}"
    assert environment["ORDERFLOW_ENVIRONMENT"] == "production"
    urls = {
        "DATABASE_URL": ("postgres", 5432),
        "RABBITMQ_URL": ("rabbitmq", 5672),
        "REDIS_URL": ("redis", 6379),
    }
    for key, (host, port) in urls.items():
        # split by hand: the ${VAR:?message} in the password is not a valid URL part
        credentials, _, location = (
            environment[f"ORDERFLOW_{key}"].partition("://")[2].rpartition("@")
        )
        assert location.split("/")[0] == f"{host}:{port}", key
        password = credentials.partition(":")[2]
        assert password.startswith("${"), f"{key} has a literal password"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_commands_exist_in_the_cli(name: str) -> None:
    check_invocation(services()[name]["command"])


def test_worker_runs_two_replicas_and_processes_drop_privileges() -> None:
    all_services = services()
    assert all_services["worker"]["deploy"]["replicas"] == 2
    for name in APP_SERVICES:
        assert all_services[name]["read_only"] is True, name
        assert all_services[name]["cap_drop"] == ["ALL"], name


def test_no_secret_is_written_in_the_compose_file() -> None:
    for name, service in services().items():
        environment = service.get("environment", {})
        for variable in SECRET_VARIABLES:
            if variable in environment:
                assert str(environment[variable]).startswith("${"), f"{name}: {variable}"


def test_every_variable_the_compose_file_reads_is_in_the_env_example() -> None:
    used = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", COMPOSE_FILE.read_text()))
    example = ENV_EXAMPLE.read_text()
    listed = set(re.findall(r"^#?\s*([A-Z_][A-Z0-9_]*)=", example, flags=re.MULTILINE))
    assert used <= listed, f"add to {ENV_EXAMPLE.name}: {sorted(used - listed)}"
    required = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*):\?", COMPOSE_FILE.read_text()))
    for variable in required:
        assert re.search(rf"^{variable}=CHANGE-ME$", example, flags=re.MULTILINE), variable


def test_images_are_pinned_and_bind_mounts_exist() -> None:
    for name, service in services().items():
        image = service["image"]
        assert ":" in image.split("/")[-1] or image.startswith("${"), f"{name}: {image}"
        assert not image.endswith(":latest"), f"{name}: {image}"
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"


def test_prometheus_scrapes_the_compose_services_on_their_ports() -> None:
    all_services = services()
    config = load_yaml(DEPLOY / "prometheus/prometheus.yml")
    ports = {"api": "8000"} | {
        name: all_services[name]["command"][-1] for name in ("relay", "worker")
    }
    for job in config["scrape_configs"]:
        for sd in job.get("dns_sd_configs", []):
            (name,) = sd["names"]
            assert name in all_services, f"{job['job_name']} scrapes unknown {name}"
            assert str(sd["port"]) == ports[name], job["job_name"]
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host = target.split(":")[0]
                assert host in all_services or host == "127.0.0.1", target
