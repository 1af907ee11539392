"""The deployment files agree with the code: every variable they set is a setting, the
shutdown budgets cover drain + in-flight requests, and each piece runs the right command.

`make lint-deploy` checks the files against their schemas; this checks what no schema
knows. The README's Configuration table is checked the same way: it lists every setting.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from taskmanager.kit.config import Settings, known_variables

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES = ROOT / "deploy" / "kubernetes"
SYSTEMD = ROOT / "deploy" / "systemd"
SETTING = re.compile(r"\bTASKMANAGER_[A-Z0-9_]+\b")


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return loaded


def _kubernetes(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((KUBERNETES / name).read_text())
    return loaded


def _compose_default(value: str) -> float:
    """The default of a compose interpolation such as ``${TASKMANAGER_DRAIN_SECONDS:-5}``."""
    match = re.fullmatch(r"\$\{[A-Z_]+:-([0-9.]+)\}", value)
    assert match, value
    return float(match.group(1))


def _seconds(value: str) -> float:
    """A compose duration such as ``35s`` or ``1m30s``."""
    units = {"h": 3600, "m": 60, "s": 1}
    parts = re.findall(r"([0-9.]+)([hms])", value)
    assert "".join(n + u for n, u in parts) == value, value
    return sum(float(number) * units[unit] for number, unit in parts)


def _settings_set_by_deploy_files() -> dict[str, set[str]]:
    """Each file's ``TASKMANAGER_*`` names that reach the service as settings."""
    found: dict[str, set[str]] = {}
    for name, service in _compose()["services"].items():
        environment = service.get("environment", {})
        found[f"compose.yaml:{name}"] = {key for key in environment if SETTING.fullmatch(key)}
    for path in sorted(KUBERNETES.glob("*.yaml")):
        document = yaml.safe_load(path.read_text())
        keys = set(document.get("data", {})) | set(document.get("stringData", {}))
        containers = (
            document.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])
        )
        keys |= {env["name"] for c in containers for env in c.get("env", [])}
        found[path.name] = {key for key in keys if SETTING.fullmatch(key)}
    for path in sorted(SYSTEMD.glob("*.service")):
        lines = [line for line in path.read_text().splitlines() if not line.startswith("#")]
        assigned = re.findall(r"^Environment=(TASKMANAGER_[A-Z0-9_]+)=", "\n".join(lines), re.M)
        found[path.name] = set(assigned)
    dockerfile = (ROOT / "Dockerfile").read_text()
    found["Dockerfile"] = set(re.findall(r"\b(TASKMANAGER_[A-Z0-9_]+)=", dockerfile))
    return found


def test_every_variable_the_deploy_files_set_is_a_setting() -> None:
    known = set(known_variables())
    found = _settings_set_by_deploy_files()
    # The parsing found them.
    assert found["compose.yaml:api"]
    assert found["configmap.yaml"]
    unknown = {where: names - known for where, names in found.items() if names - known}
    assert unknown == {}


def test_the_readme_configuration_table_lists_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `TASKMANAGER_")]
    documented = {name for row in rows for name in SETTING.findall(row.split(" | ", 1)[0])}
    fields = {f"TASKMANAGER_{name.upper()}" for name in Settings.model_fields}
    assert sorted(fields - documented) == []
    assert sorted(documented - fields) == []


def test_compose_runs_migrate_once_before_the_api_and_the_worker() -> None:
    services = _compose()["services"]
    assert {"api", "worker", "migrate", "postgres", "redis"} <= set(services)
    assert services["migrate"]["command"] == ["migrate"]
    assert services["migrate"]["restart"] == "no"
    assert services["worker"]["command"] == ["worker"]
    assert services["api"]["command"][0] == "serve"
    for name in ("api", "worker"):
        waits = services[name]["depends_on"]
        assert waits["migrate"] == {"condition": "service_completed_successfully"}
        assert waits["postgres"]["condition"] == "service_healthy"
        assert waits["redis"]["condition"] == "service_healthy"
        environment = services[name]["environment"]
        assert environment["TASKMANAGER_ENV"] == "production"
        # Secrets only from the operator's environment: compose refuses to start without.
        for secret in ("TASKMANAGER_SECRET_KEY", "TASKMANAGER_METRICS_TOKEN"):
            assert environment[secret].startswith(f"${{{secret}:?"), environment[secret]
        budget = _compose_default(environment["TASKMANAGER_DRAIN_SECONDS"]) + _compose_default(
            environment["TASKMANAGER_SHUTDOWN_TIMEOUT_SECONDS"]
        )
        assert _seconds(services[name]["stop_grace_period"]) > budget


def test_kubernetes_grace_period_covers_prestop_drain_and_shutdown() -> None:
    config = _kubernetes("configmap.yaml")["data"]
    drain = float(config["TASKMANAGER_DRAIN_SECONDS"])
    shutdown = float(config["TASKMANAGER_SHUTDOWN_TIMEOUT_SECONDS"])
    pod = _kubernetes("api-deployment.yaml")["spec"]["template"]["spec"]
    (api,) = pod["containers"]
    sleep = api["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep[0] == "sleep"
    assert pod["terminationGracePeriodSeconds"] > float(sleep[1]) + drain + shutdown
    assert api["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert api["livenessProbe"]["httpGet"]["path"] == "/health"
    assert api["startupProbe"]["httpGet"]["path"] == "/health"
    assert api["args"][0] == "serve"
    worker_pod = _kubernetes("worker-deployment.yaml")["spec"]["template"]["spec"]
    assert worker_pod["containers"][0]["args"] == ["worker"]
    assert worker_pod["terminationGracePeriodSeconds"] > shutdown
    job = _kubernetes("migrate-job.yaml")["spec"]["template"]["spec"]
    assert job["containers"][0]["args"] == ["migrate"]
    assert job["restartPolicy"] == "Never"


def test_systemd_stop_timeout_covers_drain_and_shutdown() -> None:
    defaults = Settings.model_fields
    budget = float(defaults["drain_seconds"].default) + float(
        defaults["shutdown_timeout_seconds"].default
    )
    for unit in ("taskmanager-api.service", "taskmanager-worker.service"):
        text = (SYSTEMD / unit).read_text()
        (timeout,) = re.findall(r"^TimeoutStopSec=([0-9]+)$", text, re.M)
        assert float(timeout) > budget, unit
        assert "Requires=taskmanager-migrate.service" in text
