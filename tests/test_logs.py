"""Log lines: one JSON object each, Python's warnings included; the start-up line's configuration shows no secret."""

from __future__ import annotations

import json
import subprocess
import sys

from webhook.config import parse_config
from webhook.config.view import effective_view


def test_the_effective_configuration_is_keyed_by_yaml_names_and_names_secret_files_only(tmp_path):
    credentials = tmp_path / "config.json"
    credentials.write_text(json.dumps({"auths": {"ccr.local": {"auth": "dXNlcjpodW50ZXIy"}}}))
    (tmp_path / "peer-secret").write_text("hunter2")
    config = parse_config(
        {
            "ccr": {"registry": "ccr.local", "credentials": str(credentials)},
            "upstreams": [{"registry": "docker.io", "endpoint": "https://mirror.example"}],
            "front": {"peerSecret": str(tmp_path / "peer-secret")},
            "policy": {"onResolveError": "deny"},
        }
    )
    view = effective_view(config)
    assert view["ccr"]["credentials"] == str(credentials)  # where the secret is, which helps; not what it is
    assert view["upstreams"][0]["endpoint"] == "https://mirror.example"
    assert view["front"]["peerSecret"] == str(tmp_path / "peer-secret")
    assert view["policy"]["onResolveError"] == "deny" and view["resolver"]["cacheSeconds"] == 300.0
    text = json.dumps(view)
    assert "hunter2" not in text and "dXNlcjpodW50ZXIy" not in text


def test_python_warnings_are_json_lines_too():
    code = (
        "import warnings; from webhook.logs import setup_logging; setup_logging(); "
        "warnings.warn('Unverified HTTPS request')"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    [line] = done.stderr.splitlines()
    entry = json.loads(line)
    assert entry["level"] == "warning" and "Unverified HTTPS request" in entry["message"]
