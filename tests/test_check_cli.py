"""`ccr-webhook check` end to end through the CLI: inputs, output formats, exit codes, and --offline staying offline."""

import io
import json
import socket
import textwrap
from pathlib import Path

import pytest

from webhook.cli import main

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
CCR = "ccr.local:5000"


@pytest.fixture
def listener():
    """A TCP port that records connection attempts: the upstream endpoint --offline must never reach."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        sock.setblocking(False)
        yield sock
        with pytest.raises(BlockingIOError):
            sock.accept()


@pytest.fixture
def config_file(tmp_path_factory, listener):
    def write(**policy):
        policy.setdefault("swap", "exists")  # the report then shows what either answer of the CCR leads to
        port = listener.getsockname()[1]
        path = tmp_path_factory.mktemp("config") / "config.yaml"
        path.write_text(
            json.dumps(
                {
                    "ccr": {"registry": CCR, "endpoint": f"http://127.0.0.1:{port}", "insecure": True},
                    "upstreams": [{"registry": "docker.io", "endpoint": f"http://127.0.0.1:{port}", "insecure": True}],
                    "policy": policy,
                }
            )
        )
        return str(path)

    return write


@pytest.fixture(autouse=True)
def terminal(monkeypatch):
    """Tables are fitted to the terminal: make it a known 120 columns."""
    monkeypatch.setenv("COLUMNS", "120")


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Every test here is offline: any socket connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"check --offline opened a connection: {args}")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


def check(capsys, *args):
    """Run `ccr-webhook check --offline ARGS`; return (exit code, stdout, stderr)."""
    code = main(["check", "--offline", *args])
    out, err = capsys.readouterr()
    return code, out, err


def pod(name, image, kind="Pod"):
    return textwrap.dedent(f"""\
        apiVersion: v1
        kind: {kind}
        metadata: {{name: {name}, namespace: team}}
        spec:
          containers:
            - name: main
              image: "{image}"
        """)


def test_examples_table_and_denied_latest_exit_1(capsys, config_file):
    code, out, err = check(capsys, "--config", config_file(), str(EXAMPLES / "manifests"))
    assert code == 1 and err == ""
    lines = out.splitlines()
    assert lines[0].split() == ["KIND", "NAMESPACE/NAME", "CONTAINER", "IMAGE", "ACTION", "RESULT/REASON"]
    assert any(line.split()[:5] == ["Pod", "default/scratchpad", "redis", "redis", "deny"] for line in lines)
    assert any(line.startswith("CronJob ") for line in lines) and any(line.startswith("Deployment ") for line in lines)
    assert "migrate (init)" in out
    assert max(len(line) for line in lines[:-1]) <= 120
    assert lines[-1].startswith(
        "5 images in 3 workloads (4 documents; skipped: 1 Service): 1 deny, 2 leave, 2 pin/rewrite"
    )
    assert "2 undecided: needs registry lookup; skipped (--offline)" in lines[-1]


def test_the_shipped_example_config_loads(capsys):
    code, out, _ = check(
        capsys, "--config", str(EXAMPLES / "config.yaml"), str(EXAMPLES / "manifests" / "cronjob.yaml")
    )
    assert code == 0 and "leave" in out


def test_clean_manifests_exit_0(tmp_path, capsys, config_file):
    (tmp_path / "ok.yaml").write_text(pod("ok", "nginx:1.25"))
    code, out, _ = check(capsys, "--config", config_file(), str(tmp_path / "ok.yaml"))
    assert code == 0
    assert "pin/rewrite" in out and "deny" not in out


@pytest.mark.parametrize(
    ("policy", "image", "action"),
    [
        ({}, "nginx:1.25", "pin/rewrite"),
        ({"swap": "always"}, "nginx:1.25", "rewrite"),
        ({}, "docker.io/library/nginx:1.25@sha256:" + "a" * 64, "leave/rewrite"),
        ({"swap": "always"}, "nginx@sha256:" + "a" * 64, "rewrite"),
    ],
)
def test_offline_reports_the_actions_registry_answers_could_lead_to(
    tmp_path, capsys, config_file, policy, image, action
):
    (tmp_path / "p.yaml").write_text(pod("p", image))
    code, out, _ = check(capsys, "--config", config_file(**policy), "-o", "json", str(tmp_path / "p.yaml"))
    [result] = json.loads(out)["results"]
    assert code == 0
    decided = action == "rewrite" and "@" in image
    assert (result["action"], result["decided"]) == (action, decided)


def test_json_output_has_stable_fields_and_a_summary(tmp_path, capsys, config_file):
    (tmp_path / "two.yaml").write_text(pod("a", "nginx") + "---\n" + pod("b", "quay.io/x/y:1") + "---\nkind: Secret\n")
    code, out, _ = check(capsys, "--config", config_file(), "-o", "json", str(tmp_path))
    report = json.loads(out)
    assert code == 1
    assert [set(result) for result in report["results"]] == [
        {
            "source",
            "document",
            "kind",
            "namespace",
            "name",
            "container",
            "container_list",
            "pointer",
            "image",
            "action",
            "reason",
            "new_image",
            "decided",
        }
    ] * 2
    first = report["results"][0]
    assert (first["source"], first["document"], first["pointer"], first["action"]) == (
        str(tmp_path / "two.yaml"),
        1,
        "/spec/containers/0/image",
        "deny",
    )
    assert report["summary"] == {
        "images": 2,
        "workloads": 2,
        "objects": 3,
        "documents": 3,
        "skipped_kinds": {"Secret": 1},
        "actions": {"deny": 1, "leave": 1},
        "denied": 1,
        "undecided": 0,
        "offline": True,
    }


def test_stdin_yaml_and_kubectl_json_list(monkeypatch, capsys, config_file):
    monkeypatch.setattr("sys.stdin", io.StringIO(pod("from-stdin", "nginx:1.25")))
    code, out, _ = check(capsys, "--config", config_file(), "-")
    assert code == 0 and "team/from-stdin" in out
    kubectl = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {
                "apiVersion": "apps/v1",
                "kind": "StatefulSet",
                "metadata": {"name": "db"},
                "spec": {"template": {"spec": {"containers": [{"name": "pg", "image": "postgres:latest"}]}}},
            },
        ],
    }
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(kubectl, indent="\t")))
    code, out, _ = check(capsys, "--config", config_file(), "-o", "json", "-")
    [result] = json.loads(out)["results"]
    assert code == 1 and (result["source"], result["kind"], result["action"]) == ("<stdin>", "StatefulSet", "deny")


def test_directories_recurse_into_manifests_only(tmp_path, capsys, config_file):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / ".git").mkdir()
    (tmp_path / "a" / "one.yml").write_text(pod("one", "nginx:1"))
    (tmp_path / "a" / "b" / "two.json").write_text(
        json.dumps(
            {"kind": "Pod", "metadata": {"name": "two"}, "spec": {"containers": [{"name": "c", "image": "x:1"}]}}
        )
    )
    (tmp_path / "a" / "notes.txt").write_text("not: [a manifest")
    (tmp_path / ".git" / "hidden.yaml").write_text("kind: Pod\nspec: {containers: [{image: latest-bad}]}\n")
    code, out, _ = check(capsys, "--config", config_file(), "-o", "json", str(tmp_path))
    assert code == 0
    assert [r["name"] for r in json.loads(out)["results"]] == ["one", "two"]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("kind: Pod\nspec:\n  containers:\n  - image: [nginx\n", "bad.yaml:5:1: invalid YAML"),
        ("kind: Pod\nspec: {containers: 3}\n", "bad.yaml: document 1 (Pod (unnamed)): spec.containers must be a list"),
    ],
)
def test_unreadable_input_exits_2_naming_the_file(tmp_path, capsys, config_file, content, expected):
    (tmp_path / "good.yaml").write_text(pod("good", "nginx"))
    (tmp_path / "bad.yaml").write_text(content)
    code, out, err = check(capsys, "--config", config_file(), str(tmp_path / "good.yaml"), str(tmp_path / "bad.yaml"))
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and expected in err and "Traceback" not in err


def test_missing_file_exits_2(tmp_path, capsys, config_file):
    code, _, err = check(capsys, "--config", config_file(), str(tmp_path / "nope.yaml"))
    assert code == 2 and err.strip().endswith("nope.yaml: no such file or directory")


def test_configuration_errors_exit_2_on_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("CCR_WEBHOOK_CONFIG", raising=False)
    (tmp_path / "p.yaml").write_text(pod("p", "nginx:1"))
    code, _, err = check(capsys, str(tmp_path / "p.yaml"))
    assert code == 2 and "--config FILE is required" in err
    (tmp_path / "bad-config.yaml").write_text("ccr: {registry: ccr.local}\npolicy: {swap: sometimes}\n")
    code, _, err = check(capsys, "--config", str(tmp_path / "bad-config.yaml"), str(tmp_path / "p.yaml"))
    assert (
        code == 2
        and err
        == "ccr-webhook check: configuration error: policy.swap: must be one of exists, always, got 'sometimes'\n"
    )


def test_long_images_are_cut_in_the_middle_and_columns_stay_aligned(tmp_path, capsys, config_file, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    long_image = "registry.example.com/" + "very-long-team-name/" * 4 + "service:1.2.3"
    (tmp_path / "p.yaml").write_text(pod("short", "nginx:1") + "---\n" + pod("long", long_image))
    code, out, _ = check(capsys, "--config", config_file(), str(tmp_path / "p.yaml"))
    header, first, second = out.splitlines()[:3]
    assert code == 0
    assert "  registry.example.co...name/service:1.2.3  " in second
    assert header.index("ACTION") == first.index("pin/rewrite") == second.index("leave")


def test_long_reasons_wrap_under_their_column(tmp_path, capsys, config_file, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    (tmp_path / "p.yaml").write_text(pod("p", "registry.example.com/team/service:1.2.3"))
    code, out, _ = check(capsys, "--config", config_file(), str(tmp_path / "p.yaml"))
    header, *rows, _ = out.splitlines()
    column = header.index("RESULT/REASON")
    assert code == 0 and len(rows) > 1
    assert all(row.startswith(" " * column) and not row[column].isspace() for row in rows[1:])
    assert (
        " ".join(row[column:] for row in rows)
        == "registry registry.example.com is not a configured upstream; not contacted"
    )
    assert max(len(row) for row in [header, *rows]) <= 100
