"""`ccr-webhook check` online: the verdicts admission would give, from the registry fake's answers."""

import json

import pytest

from tests.support.fake_registry import FakeRegistries, FakeRegistry
from webhook.cli import main
from webhook.commands.check import online_verdicts
from webhook.config import parse_config

DIGEST = "sha256:" + "d" * 64


EXISTS = {"swap": "exists"}  # the verdict follows the CCR's answer (under the default, always, it is a rewrite)


@pytest.mark.parametrize(
    ("image", "ccr_digests", "policy", "action", "new_image"),
    [
        ("nginx:1.25", (), {}, "pin", f"docker.io/library/nginx:1.25@{DIGEST}"),
        (
            "nginx:1.25",
            [("docker.io/library/nginx", DIGEST)],
            {},
            "rewrite",
            f"ccr.local/docker.io/library/nginx:1.25@{DIGEST}",
        ),
        # a tag the upstream says does not exist fails CI whatever onResolveError says (admission: unpinned)
        ("nginx:9", (), {}, "deny", None),
        ("nginx:9", (), {"onResolveError": "deny"}, "deny", None),
        ("nginx", (), {}, "deny", None),
    ],
)
def test_online_verdicts_follow_the_registry_answers(image, ccr_digests, policy, action, new_image):
    config = parse_config(
        {"ccr": {"registry": "ccr.local"}, "upstreams": [{"registry": "docker.io"}], "policy": {**EXISTS, **policy}}
    )
    registries = FakeRegistries(FakeRegistry({("library/nginx", "1.25"): DIGEST}), FakeRegistry(held=ccr_digests))
    [verdict] = online_verdicts([image], config, registries, timeout=5)
    assert (verdict.action, verdict.new_image, verdict.decided) == (action, new_image, True)


def test_an_unreadable_credentials_file_is_a_configuration_error(tmp_path, capsys):
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps({"ccr": {"registry": "ccr.local", "credentials": str(tmp_path / "missing.json")}}))
    (tmp_path / "pod.yaml").write_text("kind: Pod\nspec: {containers: [{name: c, image: nginx:1}]}\n")
    code = main(["check", "--config", str(config), str(tmp_path / "pod.yaml")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(
        "ccr-webhook check: configuration error: registry https://ccr.local: cannot read credentials file"
    )
    assert err.count("\n") == 1
