"""The Dockerfile, checked statically: no Docker engine runs on the development machine."""

from __future__ import annotations

import json
import re
import tomllib

from tests.deploy.cli_contract import check_invocation
from tests.deploy.support import DEPLOY, ROOT, run, tool

DOCKERFILE = ROOT / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    pairs = []
    for line in joined.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            word, _, rest = stripped.partition(" ")
            pairs.append((word.upper(), rest.strip()))
    return pairs


def last_stage() -> list[tuple[str, str]]:
    steps = instructions()
    start = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[start:]


def test_dockerfile_passes_hadolint() -> None:
    result = run(tool("hadolint"), "--no-color", "--failure-threshold", "info", str(DOCKERFILE))
    assert result.returncode == 0, result.stdout + result.stderr


def test_base_image_is_a_build_argument_defaulting_to_python_slim() -> None:
    steps = instructions()
    assert steps[0] == ("ARG", "BASE_IMAGE=python:3.11-slim")
    froms = [rest for word, rest in steps if word == "FROM"]
    assert len(froms) >= 2, "multi-stage: a build stage and a runtime stage"
    assert all(rest.startswith("${BASE_IMAGE}") for rest in froms)


def test_the_build_installs_from_the_wheelhouse_without_network_or_registry() -> None:
    text = DOCKERFILE.read_text()
    syntax = re.search(r"^#\s*syntax=", text, re.M)
    assert syntax is None, "a syntax line makes BuildKit fetch its frontend image"
    env = " ".join(rest for word, rest in instructions() if word == "ENV")
    assert "PIP_NO_INDEX=1" in env, "pip must never reach an index inside the build"
    runs = " ".join(rest for word, rest in instructions() if word == "RUN")
    assert "--no-deps /wheels/app/" in runs
    script = (DEPLOY / "docker" / "wheelhouse.sh").read_text()
    assert "--constraint requirements.lock" in script, "dependency versions come from the lock"


def test_every_runtime_dependency_is_pinned_by_the_lock() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lock = (ROOT / "requirements.lock").read_text().lower()
    pinned = set(re.findall(r"^([a-z0-9_.-]+)==", lock, flags=re.MULTILINE))
    for requirement in project["dependencies"]:
        name = re.split(r"[\[<>=!~ ;]", requirement, maxsplit=1)[0].lower().replace("_", "-")
        assert name in pinned, f"{name} is not pinned in requirements.lock: re-lock"


def test_runtime_stage_runs_orderflow_as_a_non_root_user_in_production_mode() -> None:
    stage = last_stage()
    users = [rest for word, rest in stage if word == "USER"]
    assert users, "the runtime stage sets no USER"
    assert users[-1].split(":")[0] not in {"root", "0"}
    entrypoint = [json.loads(rest) for word, rest in stage if word == "ENTRYPOINT"]
    assert entrypoint == [["orderflow"]]
    (cmd,) = [json.loads(rest) for word, rest in stage if word == "CMD"]
    assert cmd == ["api", "--host", "0.0.0.0"]
    check_invocation(cmd)
    env = " ".join(rest for word, rest in stage if word == "ENV")
    assert "ORDERFLOW_ENVIRONMENT=production" in env
    assert any(word == "HEALTHCHECK" and "/healthz" in rest for word, rest in stage)


def test_build_context_holds_only_what_the_image_needs() -> None:
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert "*" in ignore, "start from nothing, then allow what the image needs"
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    copied = set()
    for word, rest in instructions():
        if word == "COPY" and "--from" not in rest:
            copied.update(rest.split()[:-1])
    assert copied <= allowed, f"COPY of files the context excludes: {copied - allowed}"
    # The context is made by the wheelhouse script, so a fresh clone has none of it yet: each
    # allowed folder must be one that script writes.
    script = (ROOT / "deploy/docker/wheelhouse.sh").read_text()
    assert "OUT=${WHEELHOUSE:-.wheelhouse}" in script
    for name in allowed:
        folder = name.removeprefix(".wheelhouse/")
        assert folder != name, f"{name}: not made by deploy/docker/wheelhouse.sh"
        assert f"$OUT/{folder}" in script, f"{name}: not made by deploy/docker/wheelhouse.sh"


def test_base_image_script_is_valid_bash() -> None:
    script = DEPLOY / "docker" / "make-base-image.sh"
    assert script.stat().st_mode & 0o111, "make-base-image.sh is not executable"
    result = run("bash", "-n", str(script))
    assert result.returncode == 0, result.stderr
    text = script.read_text()
    assert "debootstrap" in text
    assert "docker import" in text
