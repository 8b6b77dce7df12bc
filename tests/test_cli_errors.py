"""Every user error of every subcommand is one or two lines on stderr and exit 2, never a traceback; a bug keeps its.

Run as a user would: the installed `ccr-webhook`, in a subprocess, over real files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from webhook import tls
from webhook.cli import main
from webhook.errors import CCRWebhookError

CCR_WEBHOOK = str(Path(sys.executable).parent / "ccr-webhook")


def run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`ccr-webhook ARGS` in `cwd`, with no cluster in reach: no service account, no kubeconfig."""
    environ = {key: value for key, value in os.environ.items() if not key.startswith(("KUBE", "CCR_WEBHOOK_"))}
    environ.update(HOME=str(cwd), **(env or {}))
    return subprocess.run(
        [CCR_WEBHOOK, *args], cwd=cwd, env=environ, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A directory with a CA and serving pair in certs/, a pod manifest, and configurations good and bad."""
    ca = tls.generate_ca(days=30)
    (tmp_path / "certs").mkdir()
    ca.write(tmp_path / "certs" / "ca.crt", tmp_path / "certs" / "ca.key")
    tls.issue_serving_cert(ca, ["localhost"], days=30).write(
        tmp_path / "certs" / "tls.crt", tmp_path / "certs" / "tls.key"
    )
    (tmp_path / "pod.yaml").write_text(
        "kind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, image: nginx:1}]}\n"
    )
    (tmp_path / "config.yaml").write_text(json.dumps({"ccr": {"registry": "ccr.local:5000"}}))
    (tmp_path / "broken.yaml").write_text("ccr:\n  registry: [\n")
    (tmp_path / "processes.yaml").write_text(
        json.dumps(
            {
                "ccr": {"registry": "ccr.local:5000"},
                "front": {"listen": "127.0.0.1:0", "tlsCert": "missing.crt", "tlsKey": "missing.key"},
                "warmer": {"listen": "127.0.0.1:0", "metricsListen": "127.0.0.1:0"},
            }
        )
    )
    (tmp_path / "no-credentials.yaml").write_text(
        json.dumps(
            {
                "ccr": {"registry": "ccr.local:5000"},
                "upstreams": [{"registry": "docker.io", "credentials": str(tmp_path / "missing.json")}],
                "webhook": {
                    "listen": "127.0.0.1:0",
                    "tlsCert": str(tmp_path / "certs" / "tls.crt"),
                    "tlsKey": str(tmp_path / "certs" / "tls.key"),
                },
            }
        )
    )
    return tmp_path


# (arguments, a phrase the error must carry)
USER_ERRORS = {
    "inspect a key": (["certs", "inspect", "certs/tls.key"], "certs/tls.key holds no PEM certificate"),
    "inspect a missing file": (["certs", "inspect", "/nonexistent"], "cannot read the certificate /nonexistent"),
    "inspect with a missing CA": (["certs", "inspect", "certs/tls.crt", "--ca", "nope.crt"], "cannot read the CA"),
    "generate for a bad address": (["certs", "generate", "--out", "new", "--ip", "not-an-ip"], "not an IP address"),
    "generate for negative days": (["certs", "generate", "--out", "new", "--days", "-5"], "--days: must be"),
    "reuse a CA that is not there": (["certs", "generate", "--out", "new", "--reuse-ca"], "without --reuse-ca"),
    "generate over a CA": (["certs", "generate", "--out", "certs"], "pass --reuse-ca to sign with it, or --force"),
    "gc without a cluster": (["gc", "--dry-run", "--config", "config.yaml"], "no Kubernetes cluster"),
    "bootstrap without a cluster": (["certs", "bootstrap"], "--kubeconfig FILE or set KUBECONFIG"),
    "bootstrap with a missing kubeconfig": (["certs", "bootstrap", "--kubeconfig", "nope"], "kubeconfig nope"),
    "gc with a kubeconfig that is not YAML": (
        ["gc", "--config", "config.yaml", "--kubeconfig", "broken.yaml"],
        "kubeconfig broken.yaml: while parsing",
    ),
    "warmer without a cluster": (["warmer", "--config", "processes.yaml"], "no Kubernetes cluster"),
    "front without its TLS pair": (["front", "--config", "processes.yaml"], "cannot load: [Errno 2]"),
    "serve without its credentials": (["serve", "--config", "no-credentials.yaml"], "missing.json"),
    "a YAML syntax error": (["check", "--config", "broken.yaml", "pod.yaml"], "not valid YAML: line 3, column 1"),
    "no configuration": (["check", "pod.yaml"], "--config FILE is required"),
    "an unknown subcommand": (["nosuch"], "invalid choice: 'nosuch'"),
    "a missing manifest": (["check", "--offline", "--config", "config.yaml", "nope.yaml"], "no such file"),
    "warm a bad reference": (["warm", "--config", "config.yaml", "UPPER/Case"], "UPPER/Case"),
}


@pytest.mark.parametrize(("args", "phrase"), USER_ERRORS.values(), ids=USER_ERRORS.keys())
def test_a_user_error_is_one_or_two_lines_and_exit_2(workdir: Path, args: list[str], phrase: str) -> None:
    done = run(*args, cwd=workdir)
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 2, done.stderr
    assert 1 <= len(done.stderr.splitlines()) <= 2, done.stderr
    assert done.stderr.startswith("ccr-webhook"), done.stderr
    assert phrase in done.stderr


def test_generate_never_replaces_a_ca_unless_forced(workdir: Path) -> None:
    before = (workdir / "certs" / "ca.key").read_bytes()
    assert run("certs", "generate", "--out", "certs", cwd=workdir).returncode == 2
    assert (workdir / "certs" / "ca.key").read_bytes() == before
    reused = run("certs", "generate", "--out", "certs", "--reuse-ca", cwd=workdir)
    assert reused.returncode == 0 and (workdir / "certs" / "ca.key").read_bytes() == before
    ca = (workdir / "certs" / "ca.crt").read_bytes()
    tls.verify_serving_certificate(ca, (workdir / "certs" / "tls.crt").read_bytes(), "ccr-webhook.ccr-system.svc")
    forced = run("certs", "generate", "--out", "certs", "--force", cwd=workdir)
    assert forced.returncode == 0 and (workdir / "certs" / "ca.key").read_bytes() != before


def test_a_reader_that_goes_away_ends_the_output_quietly(workdir: Path) -> None:
    """`check -o json | head`: far more output than a pipe buffer holds, the reader gone after one line."""
    pods = "---\n".join(
        f"kind: Pod\nmetadata: {{name: p{n}}}\nspec: {{containers: [{{name: c, image: nginx:{n}}}]}}\n"
        for n in range(2000)
    )
    (workdir / "many.yaml").write_text(pods)
    environ = {key: value for key, value in os.environ.items() if not key.startswith("CCR_WEBHOOK_")}
    with subprocess.Popen(
        [CCR_WEBHOOK, "check", "-o", "json", "--offline", "--config", "config.yaml", "many.yaml"],
        cwd=workdir,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as process:
        assert process.stdout is not None and process.stderr is not None
        assert process.stdout.readline().strip() == b"{"
        process.stdout.close()
        stderr = process.stderr.read().decode()
        code = process.wait(timeout=60)
    assert stderr == ""
    assert code == 141  # as `yes | head` exits: the reader went away


def test_version_comes_from_the_package_metadata(workdir: Path) -> None:
    from importlib.metadata import version

    done = run("--version", cwd=workdir)
    assert done.returncode == 0 and done.stdout == f"ccr-webhook {version('ccr-webhook')}\n"


def test_an_error_of_ours_is_one_line_but_a_bug_keeps_its_traceback(monkeypatch, capsys) -> None:
    """The difference between a user error (exit 2, one line) and a bug (the exception propagates, traceback)."""
    import webhook.commands.demo as demo

    def user_error(args: object) -> int:
        raise CCRWebhookError("something the user can fix\nwrapped over two lines")

    monkeypatch.setattr(demo, "run", user_error)
    assert main(["demo"]) == 2
    assert capsys.readouterr().err == "ccr-webhook demo: something the user can fix wrapped over two lines\n"

    def bug(args: object) -> int:
        raise ValueError("a programming error")

    monkeypatch.setattr(demo, "run", bug)
    with pytest.raises(ValueError, match="a programming error"):
        main(["demo"])
