"""`ccr-webhook copy` and `ccr-webhook warm` end to end against real registries, and copy_warm_request in the queue."""

from __future__ import annotations

import functools
import io
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support.clock import Clock
from tests.support.local_registry import client as registry_client
from webhook.cli import main
from webhook.commands.progress import ProgressDisplay
from webhook.config import parse_config
from webhook.copier.engine import CopyProgress, copy_warm_request
from webhook.policy.decide import warm_request_for
from webhook.policy.reference import parse_image
from webhook.registry.client import Registries
from webhook.testing.processes import RegistryServer, free_port
from webhook.testing.sample_image import push_sample_image
from webhook.warmer.queue import JobState, WarmQueue

pytestmark = pytest.mark.integration

PREFIX = "mirror/up"
REPOSITORY = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def raw_config(upstream, ccr) -> dict:
    return {
        "ccr": {"registry": ccr.host, "endpoint": ccr.url, "insecure": True},
        "upstreams": [{"registry": upstream.host, "endpoint": upstream.url, "insecure": True, "prefix": PREFIX}],
    }


@pytest.fixture(scope="module")
def config_file(tmp_path_factory, raw_config) -> str:
    path = tmp_path_factory.mktemp("config") / "config.yaml"
    path.write_text(yaml.safe_dump(raw_config))
    return str(path)


@pytest.fixture(scope="module")
def images(upstream):
    """Two upstream images: an index and a single manifest."""
    writer = registry_client(upstream.url)
    return {
        "multi": push_sample_image(writer, "app/multi", "v1", [40_000], seed=201, platforms=2),
        "single": push_sample_image(writer, "app/single", "v2", [30_000], seed=202),
    }


def test_copy_copies_between_configured_registries_and_says_what_it_did(config_file, upstream, ccr, images, capsys):
    code = main(["copy", "--config", config_file, f"{upstream.host}/app/multi:v1", f"{ccr.host}/copied/multi"])
    out = capsys.readouterr().out
    assert code == 0 and images["multi"].digest in out and "3 manifests" in out
    assert "blobs 4/4" in out  # the plain progress lines, stdout being no terminal
    assert registry_client(ccr.url).resolve_digest("copied/multi", "v1") == images["multi"].digest  # DST took SRC's tag
    assert main(["copy", "--config", config_file, f"{upstream.host}/app/multi:v1", f"{ccr.host}/copied/multi"]) == 0
    assert "already there" in capsys.readouterr().out


def test_copy_within_the_ccr_mounts_instead_of_copying(config_file, upstream, ccr, images, capsys):
    assert main(["copy", "--config", config_file, f"{upstream.host}/app/single:v2", f"{ccr.host}/within/a:v2"]) == 0
    capsys.readouterr()
    assert main(["copy", "--config", config_file, f"{ccr.host}/within/a:v2", f"{ccr.host}/within/b:v2"]) == 0
    out = capsys.readouterr().out
    assert "0 blobs copied" in out and "2 mounted" in out


@pytest.mark.parametrize(
    ("source", "destination", "message"),
    [
        ("other.example:5000/app:v1", "{ccr}/x:v1", "not a configured upstream"),
        ("{up}/app/multi:v1", "other.example:5000/x:v1", "not a configured upstream"),
        ("{up}/App:v1", "{ccr}/x:v1", "invalid image reference"),
        ("{up}/app/multi:v1", f"{{ccr}}/x@sha256:{'0' * 64}", "not SRC's"),
    ],
)
def test_copy_refuses_bad_input_with_exit_2(config_file, upstream, ccr, capsys, source, destination, message):
    names = {"up": upstream.host, "ccr": ccr.host}
    assert main(["copy", "--config", config_file, source.format(**names), destination.format(**names)]) == 2
    assert message in capsys.readouterr().err


def test_copy_without_a_configuration_is_exit_2(capsys, monkeypatch):
    monkeypatch.delenv("CCR_WEBHOOK_CONFIG", raising=False)
    assert main(["copy", "a/b:1", "c/d:1"]) == 2
    assert "--config FILE is required" in capsys.readouterr().err


def test_copy_that_fails_is_exit_1_naming_the_image(config_file, upstream, ccr, capsys):
    assert main(["copy", "--config", config_file, f"{upstream.host}/app/multi:v404", f"{ccr.host}/x:v1"]) == 1
    err = capsys.readouterr().err
    assert "FAILED" in err and "app/multi:v404" in err and "not found" in err


def test_warm_copies_each_image_to_the_name_admission_uses(config_file, upstream, ccr, images, capsys):
    names = [f"{upstream.host}/app/multi:v1", f"{ccr.host}/{PREFIX}/app/single:v2"]  # upstream and CCR forms
    assert main(["warm", "--config", config_file, *names]) == 0
    out = capsys.readouterr().out
    assert "2 of 2 images warmed, 0 failed" in out
    mirror = registry_client(ccr.url)
    for pushed in images.values():
        assert mirror.resolve_digest(f"{PREFIX}/{pushed.repository}", pushed.tag) == pushed.digest
    assert main(["warm", "--config", config_file, *names]) == 0
    assert capsys.readouterr().out.count("already there") == 2


def test_warm_goes_on_past_a_failure_and_exits_1(config_file, upstream, capsys):
    assert main(["warm", "--config", config_file, f"{upstream.host}/app/none:v1", f"{upstream.host}/app/multi:v1"]) == 1
    captured = capsys.readouterr()
    assert "FAILED" in captured.err and "app/none" in captured.err
    assert "1 of 2 images warmed, 1 failed" in captured.out


def test_warm_checks_every_image_before_copying_any(config_file, upstream, ccr, images, capsys):
    fresh = push_sample_image(registry_client(upstream.url), "app/unwarmed", "v1", [1000], seed=203)
    code = main(
        ["warm", "--config", config_file, f"{upstream.host}/app/unwarmed:v1", "elsewhere.example/app:v1", "Not/Valid"]
    )
    err = capsys.readouterr().err
    assert code == 2 and "elsewhere.example" in err and "Not/Valid" in err
    assert registry_client(ccr.url).has_manifest(f"{PREFIX}/app/unwarmed", fresh.digest) is False


def test_warm_runs_as_a_command(config_file, upstream, images):
    done = subprocess.run(
        [sys.executable, "-m", "webhook.cli", "warm", "--config", config_file, f"{upstream.host}/app/single:v2"],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert images["single"].digest in done.stdout


def test_copy_warm_request_in_the_warm_queue_fails_a_missing_image_without_retrying(raw_config, upstream, images):
    config = parse_config(raw_config)
    registries = Registries(config)
    present = warm_request_for(parse_image(f"{upstream.host}/app/single:v2"), images["single"].digest, config)
    missing = warm_request_for(parse_image(f"{upstream.host}/app/single:v3"), "sha256:" + "0" * 64, config)
    queue = WarmQueue(functools.partial(copy_warm_request, registries), backoff_seconds=0.01).start()
    try:
        jobs = [queue.submit(present), queue.submit(missing)]
        finished = [queue.wait(request, timeout=30) for request in (present, missing)]
    finally:
        queue.stop()
        registries.close()
    assert [job.state for job in finished] == [JobState.DONE, JobState.FAILED]
    assert jobs[1].attempts == 1 and "not found" in (jobs[1].error or "")
    assert jobs[0].result.digest == images["single"].digest


def test_a_warm_through_the_front_reads_the_ccr_name_from_what_nodes_pull_and_never_the_upstream(ccr):
    """warmer.throughFront: the source is ccr.registry (the front) under the CCR name; the upstream is not contacted."""
    silent = f"127.0.0.1:{free_port()}"  # the upstream: nothing listens there
    with RegistryServer() as front:  # stands in for the front: serves the image under its CCR name
        image = push_sample_image(registry_client(front.url), f"{PREFIX}/app/front", "v1", [20_000], seed=203)
        config = parse_config(
            {
                "ccr": {"registry": front.host, "endpoint": ccr.url, "insecure": True},
                "upstreams": [{"registry": silent, "insecure": True, "prefix": PREFIX}],
                "warmer": {"throughFront": True},
            }
        )
        registries = Registries(config)
        try:
            request = warm_request_for(parse_image(f"{silent}/app/front:v1"), image.digest, config)
            result = copy_warm_request(registries, request)
        finally:
            registries.close()
    assert result.digest == image.digest and result.blobs_copied == len(image.blobs)
    assert registry_client(ccr.url).resolve_digest(f"{PREFIX}/app/front", "v1") == image.digest


def test_a_terminal_sees_one_line_redrawn_a_log_a_line_per_step():
    steps = [CopyProgress("img", "blobs", 2, done, 300, done * 100, done * 100, 1.0) for done in (0, 0, 1, 2)]
    steps.append(CopyProgress("img", "done", 2, 2, 300, 300, 300, 1.0))
    log, terminal = io.StringIO(), io.StringIO()
    for stream, interactive in ((log, False), (terminal, True)):
        display = ProgressDisplay(stream, "img", interactive=interactive)
        for step in steps:
            display(step)
        display.close()
    assert log.getvalue().count("\n") == 4 and "img: blobs 2/2  300 B / 300 B (100%)  300 B/s  done" in log.getvalue()
    assert "\n" not in terminal.getvalue() and terminal.getvalue().startswith("\rblobs 0/2")
    assert terminal.getvalue().endswith("\r\x1b[K")


def test_a_log_gets_a_line_at_least_every_ten_seconds_with_rate_and_time_left():
    """One 1.2 GB blob at 40 MB/s (never a step change), then 25 s of a stalled registry, on a fake clock."""
    clock, log = Clock(), io.StringIO()
    display = ProgressDisplay(log, "img", interactive=False, clock=clock)
    for second in range(1, 21):
        clock.now = 1000.0 + second
        display(CopyProgress("img", "blobs", 1, 0, 1_200_000_000, 40_000_000 * second, 40_000_000 * second, second))
        display.tick()
    for _ in range(25):  # no report at all: the ticker alone speaks
        clock.sleep(1)
        display.tick()
    display.close()
    lines = log.getvalue().splitlines()
    assert len(lines) == 5  # at 1, 11 and 21 s (the last 1 s after the last report), 31 and 41 s
    assert lines[0] == "img: blobs 0/1  38.1 MiB / 1.1 GiB (3%)  38.1 MiB/s"  # no time left from one report
    assert lines[1].endswith("(37%)  38.1 MiB/s  about 20 s left")  # 40 MB/s since the first byte, 760 MB to go
    assert lines[2].endswith("(67%)  38.1 MiB/s  about 10 s left")
    assert lines[3].endswith("about 10 s left  no bytes for 11 s") and lines[4].endswith("no bytes for 21 s")


def test_a_terminal_is_redrawn_when_the_copy_stalls():
    clock, terminal = Clock(), io.StringIO()
    display = ProgressDisplay(terminal, "img", interactive=True, clock=clock)
    display(CopyProgress("img", "blobs", 1, 0, 300, 100, 100, 1.0))
    clock.sleep(9)
    display.tick()
    assert terminal.getvalue().count("\r") == 1
    clock.sleep(1)
    display.tick()
    assert terminal.getvalue().count("\r") == 2 and "no bytes for 10 s" in terminal.getvalue()
    display.close()
