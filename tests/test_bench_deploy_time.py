"""The deployment-time benchmark's logic: the kubelet's back-off, the "node holds every blob" check, the records."""

import hashlib
import json
from pathlib import Path

import pytest

from bench.images import LAYER_SHARES, layer_sizes
from bench.nodes import (
    ImageNotHeld,
    NodePull,
    PullAttempt,
    backoff_delays,
    image_held,
    pull_like_kubelet,
    pullable_reference,
)
from bench.report import deployment_table, nodes_table, without_backoff_wait
from bench.results import ScenarioResult, Settings, load_results, save_results
from tests.support.clock import Clock

DIGEST = "sha256:" + "ab" * 32


def failing_pulls(clock: Clock, failures: int, seconds: float = 2.0):
    """A pull that takes `seconds` and fails `failures` times before it succeeds."""
    calls = []

    def pull(image: str, destination: Path) -> str | None:
        calls.append(image)
        clock.now += seconds
        return "manifest unknown" if len(calls) <= failures else None

    return pull


def test_backoff_is_ten_seconds_doubling_capped_at_five_minutes():
    delays = backoff_delays()
    assert [next(delays) for _ in range(8)] == [10, 20, 40, 80, 160, 300, 300, 300]


def test_a_node_retries_on_the_kubelet_schedule_until_the_pull_succeeds():
    clock = Clock()
    result = pull_like_kubelet(
        "node-1",
        "ccr/app@" + DIGEST,
        Path("/unused"),
        clock.now,
        give_up_after=600,
        pull=failing_pulls(clock, failures=3),
        clock=clock,
        sleep=clock.sleep,
    )
    # each attempt takes 2 s; the back-off counts from the end of the failed attempt
    assert [attempt.started for attempt in result.attempts] == [0, 12, 34, 76]
    assert [attempt.error for attempt in result.attempts] == ["manifest unknown"] * 3 + [None]
    assert result.held_at == 78


def test_a_node_gives_up_when_the_next_attempt_would_be_too_late():
    clock = Clock()
    result = pull_like_kubelet(
        "node-1",
        "ccr/app@" + DIGEST,
        Path("/unused"),
        clock.now,
        give_up_after=100,
        pull=failing_pulls(clock, failures=99),
        clock=clock,
        sleep=clock.sleep,
    )
    assert [attempt.started for attempt in result.attempts] == [0, 12, 34, 76]
    assert result.held_at is None


def test_a_pinned_image_is_pulled_by_digest_alone():
    assert pullable_reference(f"127.0.0.1:5000/up/team/app:1.0@{DIGEST}") == f"127.0.0.1:5000/up/team/app@{DIGEST}"
    assert pullable_reference("127.0.0.1:5000/team/app:1.0") == "127.0.0.1:5000/team/app:1.0"


def write_image(
    directory: Path,
    blobs: list[bytes],
    media_type: str = "application/vnd.oci.image.manifest.v1+json",
    layout: str = "dir",
):
    """skopeo's dir: layout (manifest.json, each blob in a file named by its hex digest), or an OCI layout
    (index.json naming the manifest, every blob under blobs/sha256/)."""
    blob_directory = directory / "blobs" / "sha256" if layout == "oci" else directory
    blob_directory.mkdir(parents=True)
    descriptors = []
    for blob in blobs:
        digest = hashlib.sha256(blob).hexdigest()
        (blob_directory / digest).write_bytes(blob)
        descriptors.append({"digest": f"sha256:{digest}", "size": len(blob)})
    manifest = json.dumps(
        {"schemaVersion": 2, "mediaType": media_type, "config": descriptors[0], "layers": descriptors[1:]}
    ).encode()
    if layout == "oci":
        digest = hashlib.sha256(manifest).hexdigest()
        (blob_directory / digest).write_bytes(manifest)
        index = {"schemaVersion": 2, "manifests": [{"digest": f"sha256:{digest}", "size": len(manifest)}]}
        (directory / "index.json").write_text(json.dumps(index))
    else:
        (directory / "manifest.json").write_bytes(manifest)
    return blob_directory, descriptors


LAYOUTS = pytest.mark.parametrize("layout", ["dir", "oci"])


@LAYOUTS
def test_a_node_holds_the_image_when_every_blob_is_there_with_its_digest(tmp_path, layout):
    write_image(tmp_path / "image", [b"{}", b"layer one", b"layer two"], layout=layout)
    assert image_held(tmp_path / "image") == 2 + 9 + 9


@LAYOUTS
@pytest.mark.parametrize("damage", ["missing", "corrupt", "truncated"])
def test_a_missing_or_damaged_blob_means_the_node_does_not_hold_the_image(tmp_path, damage, layout):
    blobs, descriptors = write_image(tmp_path / "image", [b"{}", b"layer one", b"layer two"], layout=layout)
    blob = blobs / descriptors[2]["digest"].removeprefix("sha256:")
    if damage == "missing":
        blob.unlink()
    else:
        blob.write_bytes(b"layer 2" if damage == "corrupt" else b"layer")
    with pytest.raises(ImageNotHeld, match=descriptors[2]["digest"]):
        image_held(tmp_path / "image")


@LAYOUTS
def test_no_manifest_or_an_index_is_not_an_image_held(tmp_path, layout):
    with pytest.raises(ImageNotHeld, match=r"manifest\.json"):
        image_held(tmp_path)
    write_image(tmp_path / "index", [b"{}"], media_type="application/vnd.oci.image.index.v1+json", layout=layout)
    with pytest.raises(ImageNotHeld, match="index"):
        image_held(tmp_path / "index")


def test_an_oci_layout_whose_index_names_no_manifest_is_not_an_image_held(tmp_path):
    write_image(tmp_path / "image", [b"{}", b"layer"], layout="oci")
    (tmp_path / "image" / "index.json").write_text('{"schemaVersion": 2, "manifests": []}')
    with pytest.raises(ImageNotHeld, match=r"index\.json"):
        image_held(tmp_path / "image")


def test_layers_add_up_to_the_image_size():
    for total in (5, 1234, 133_000_000):
        sizes = layer_sizes(total)
        assert len(sizes) == len(LAYER_SHARES) and sum(sizes) == total and min(sizes) >= 1


def test_results_resume_only_under_the_same_settings(tmp_path):
    settings = Settings(rtt_ms=110, mbit=200, nodes=3, scale=0.05)
    clock = Clock()
    node = pull_like_kubelet(
        "node-1",
        "up/app:1",
        Path("/unused"),
        clock.now,
        60,
        pull=failing_pulls(clock, 1),
        clock=clock,
        sleep=clock.sleep,
    )
    result = ScenarioResult("baseline", 133, 6_650_000, 12.0, 19_950_000, 9_000, (node,), {"ccr_held_at": 3.5})
    save_results(tmp_path / "r.json", settings, [result])
    assert load_results(tmp_path / "r.json", settings) == [result]
    assert load_results(tmp_path / "r.json", Settings(rtt_ms=110, mbit=200, nodes=3, scale=1)) == []
    assert load_results(tmp_path / "missing.json", settings) == []


def test_the_table_shows_each_scenario_and_its_saving_against_our_baseline():
    node = NodePull("node-1", "up/app:1", (PullAttempt(0.0, 1.0, None),), 1.0)
    results = [
        ScenarioResult("baseline", 133, 1, 20.0, 3, 0, (node,)),
        ScenarioResult("ccr", 133, 1, 8.0, 1, 0, (node,)),
        ScenarioResult("baseline", 670, 1, 80.0, 3, 0, (node,)),
        ScenarioResult("ccr", 670, 1, 100.0, 1, 0, (node,)),
    ]
    table = deployment_table(results, {"baseline": "Baseline", "ccr": "CCR"}, [133, 670])
    assert table[2] == "| 133 MB | 66 s | 48 s | −27% | 20.0 s | 8.0 s | −60% |"
    assert table[3] == "| 670 MB | 87 s | 65 s | −25% | 80.0 s | 100.0 s | +25% |"
    assert table[4].endswith("| **−18%** |")  # the average of −60% and +25%


def test_the_back_off_wait_is_what_came_between_the_ccr_holding_the_image_and_the_next_attempt():
    attempts = (
        PullAttempt(0.2, 0.1, "manifest unknown"),
        PullAttempt(10.3, 0.1, "manifest unknown"),
        PullAttempt(30.4, 7.8, None),
    )
    backed_off = ScenarioResult(
        "ccr", 670, 1, 38.2, 1, 0, (NodePull("node-1", "ccr/app", attempts, 38.2),), {"ccr_held_at": 27.7}
    )
    assert without_backoff_wait(backed_off) == pytest.approx(27.7 + 7.8)
    waited_at_admission = ScenarioResult(
        "ccr",
        670,
        1,
        35.0,
        1,
        0,
        (NodePull("node-1", "ccr/app", (PullAttempt(27.8, 7.2, None),), 35.0),),
        {"ccr_held_at": 27.7},
    )
    assert without_backoff_wait(waited_at_admission) == 35.0


def test_every_node_shows_when_its_successful_pull_started_and_the_retries_are_counted():
    retried = NodePull(
        "node-1", "ccr/app", (PullAttempt(0.2, 0.1, "manifest unknown"), PullAttempt(10.3, 5.0, None)), 15.3
    )
    at_once = NodePull("node-2", "ccr/app", (PullAttempt(0.3, 4.0, None),), 4.3)
    front = {"front_upstream_bytes": 990.0, "front_first_byte_mean_seconds": 0.125}
    results = [
        ScenarioResult("ccr-always", 670, 1000, 15.3, 1000, 0, (retried, at_once)),
        ScenarioResult("front", 670, 1000, 4.3, 1000, 0, (at_once, at_once), front),
    ]
    rows = nodes_table(results, {"front": "CCR front"})
    assert rows[2] == "| ccr-always | 670 MB | 1 | 10.3→15.3, 0.3→4.3 | — |"
    assert rows[3] == "| CCR front | 670 MB | 0 | 0.3→4.3, 0.3→4.3 | 125 ms, 0.99× the image |"
