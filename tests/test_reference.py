"""Table tests for the image reference grammar wrapper: what the container runtime would pull."""

import pytest

from webhook.policy.reference import (
    ImageReference,
    InvalidImageReference,
    is_digest,
    is_repository_name,
    is_tag,
    parse_image,
)

D64 = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("image", "registry", "repository", "tag", "digest"),
    [
        ("nginx", "docker.io", "library/nginx", None, None),
        ("nginx:1.25", "docker.io", "library/nginx", "1.25", None),
        ("library/nginx:1.25", "docker.io", "library/nginx", "1.25", None),
        ("index.docker.io/nginx:1", "docker.io", "library/nginx", "1", None),
        ("docker.io/bitnami/redis:7", "docker.io", "bitnami/redis", "7", None),
        ("ghcr.io/org/app/sub:v1", "ghcr.io", "org/app/sub", "v1", None),
        ("localhost/app:1", "localhost", "app", "1", None),
        ("localhost:5000/app:1", "localhost:5000", "app", "1", None),
        ("registry.example.com:5000/team/app", "registry.example.com:5000", "team/app", None, None),
        ("[::1]:5000/app:1", "[::1]:5000", "app", "1", None),
        (f"nginx@{D64}", "docker.io", "library/nginx", None, D64),
        (f"nginx:1.25@{D64}", "docker.io", "library/nginx", "1.25", D64),
        ("nginx:" + "t" * 128, "docker.io", "library/nginx", "t" * 128, None),
        ("x:5000", "docker.io", "library/x", "5000", None),
        # host names are case-insensitive (ports as written): capitals cannot make a registry look unconfigured
        ("DOCKER.IO/library/nginx:1.0", "docker.io", "library/nginx", "1.0", None),
        ("Docker.io/nginx:1.0", "docker.io", "library/nginx", "1.0", None),
        ("Index.Docker.IO/nginx:1", "docker.io", "library/nginx", "1", None),
        ("GHCR.io/org/app:v1", "ghcr.io", "org/app", "v1", None),
        ("LocalHost:5000/app:1", "localhost:5000", "app", "1", None),
        ("localhost:05000/app:1", "localhost:05000", "app", "1", None),
        ("[FE80::1]:5000/app:1", "[fe80::1]:5000", "app", "1", None),
    ],
)
def test_parse_normalizes_like_the_runtime(image, registry, repository, tag, digest):
    assert parse_image(image) == ImageReference(registry, repository, tag, digest)


@pytest.mark.parametrize(
    ("image", "reason"),
    [
        ("", "empty"),
        (" nginx", "white space"),
        ("Nginx", "lowercase"),
        ("registry.example.com:5000", "host:port with no repository"),
        ("localhost:5000", "host:port with no repository"),
        ("[::1]:5000", "host:port with no repository"),
        ("nginx@sha256:abc", "invalid reference format"),
        ("nginx@md5:" + "a" * 32, "unsupported digest algorithm"),
        ("nginx:" + "t" * 129, "invalid reference format"),
        ("a" * 256, "not be more than 255"),
        ("a" * 64, "64-byte hexadecimal"),
        ("http://registry/app", "invalid reference format"),
        ("user:pass@registry/app", "invalid reference format"),
        ("Registry/app:1", "ambiguous"),  # a one-label host to the runtime; in lower case it would be Docker Hub
    ],
)
def test_invalid_references_say_why(image, reason):
    with pytest.raises(InvalidImageReference) as caught:
        parse_image(image)
    assert reason in str(caught.value)
    assert caught.value.image == image


@pytest.mark.parametrize(
    ("image", "latest"),
    [
        ("nginx", True),
        ("nginx:latest", True),
        (f"nginx:latest@{D64}", True),
        ("nginx:1", False),
        (f"nginx@{D64}", False),
    ],
)
def test_implies_latest(image, latest):
    assert parse_image(image).implies_latest is latest


def test_with_registry_places_repository_under_prefix_and_keeps_tag_and_digest():
    ref = parse_image(f"nginx:1.25@{D64}").with_registry("ccr.local:5000", "docker.io")
    assert str(ref) == f"ccr.local:5000/docker.io/library/nginx:1.25@{D64}"
    assert str(parse_image("nginx:1").with_registry("ccr", "")) == "ccr/library/nginx:1"


def test_with_digest_and_reference():
    ref = parse_image("nginx:1.25")
    assert ref.reference == "1.25"
    assert ref.with_digest(D64).reference == D64
    assert str(ref.with_digest(D64)) == f"docker.io/library/nginx:1.25@{D64}"


D512 = "sha512:" + "b" * 128


@pytest.mark.parametrize(
    ("text", "digest"),
    [
        (D64, True),
        (D512, True),
        ("sha256:" + "a" * 63, False),
        ("sha256:" + "a" * 65, False),
        ("sha512:" + "b" * 64, False),  # sha512 needs its own length
        ("sha256:" + "A" * 64, False),  # hex in lower case only
        ("sha384:" + "a" * 96, False),  # not an algorithm the OCI spec registers
        (D64 + "\n", False),
        ("sha256:..%2f..%2fetc%2fpasswd", False),
        ("latest", False),
        ("v1:2", False),
    ],
)
def test_is_digest_has_one_meaning(text, digest):
    assert is_digest(text) is digest


@pytest.mark.parametrize(
    ("check", "text", "valid"),
    [
        (is_repository_name, "up/x", True),
        (is_repository_name, "library/nginx", True),
        (is_repository_name, "a__b/c--d/e.f_g", True),
        (is_repository_name, "a" * 255, True),
        (is_repository_name, "a" * 256, False),  # the distribution grammar's total length bound
        (is_repository_name, "Up/x", False),
        (is_repository_name, "up/../x", False),
        (is_repository_name, "up/./x", False),
        (is_repository_name, "up//x", False),
        (is_repository_name, "up/x/", False),
        (is_repository_name, "/up/x", False),
        (is_repository_name, "up/x%2f..", False),
        (is_repository_name, "up/x\r\nX: y", False),
        (is_repository_name, "up/-x", False),
        (is_repository_name, "up/x.", False),
        (is_repository_name, "up/a___b", False),
        (is_repository_name, "up/x\n", False),
        (is_tag, "1.0", True),
        (is_tag, "_x", True),
        (is_tag, "V1.2-rc_3", True),
        (is_tag, "t" * 128, True),
        (is_tag, "t" * 129, False),
        (is_tag, ".x", False),
        (is_tag, "-x", False),
        (is_tag, "1.0%0d%0aX-Injected:%20yes", False),
        (is_tag, "1.0\r\nX-Injected: yes", False),
        (is_tag, "1.0\n", False),
        (is_tag, "tä", False),  # ASCII only, as Go's \w
        (is_tag, "", False),
        (is_tag, "a:b", False),
    ],
)
def test_repository_names_and_tags_by_the_distribution_grammar(check, text, valid):
    assert check(text) is valid
