"""Table tests of the one meaning of "this tag is an attachment of digest X" (`policy/signatures.attachment_of`),
which retention reads and the copier, the signature lookup and the test harness write by (`attachment_tag`)."""

import pytest

from webhook.policy.signatures import (
    Attached,
    AttachmentTag,
    attachment_of,
    attachment_tag,
    referrers_tag,
    signature_tag,
)

HEX = "0123456789abcdef" * 4
DIGEST = f"sha256:{HEX}"


@pytest.mark.parametrize(
    ("tag", "expected"),
    [
        (f"sha256-{HEX}.sig", AttachmentTag(DIGEST, Attached.SIGNATURE)),  # cosign sign
        (f"sha256-{HEX}.att", AttachmentTag(DIGEST, Attached.ATTESTATION)),  # cosign attest
        (f"sha256-{HEX}.sbom", AttachmentTag(DIGEST, Attached.SBOM)),  # cosign attach sbom
        (f"sha256-{HEX}", AttachmentTag(DIGEST, Attached.REFERRERS)),  # the OCI referrers tag schema
        ("latest", None),
        ("v1.2.3", None),
        ("v1.sig", None),
        (f"sha256-{HEX[:-1]}.sig", None),  # a hex digit short
        (f"sha256-{HEX}0", None),  # one too many
        (f"sha256-{HEX.upper()}.sig", None),  # digests are lower case
        (f"sha256-{HEX}.sig.bak", None),
        (f"sha256-{HEX}.sigstore", None),
        (f"sha256-{HEX}.txt", None),
        (f"sha512-{HEX}", None),  # the schema truncates longer digests: no subject can be read back
        (f"release-sha256-{HEX}.sig", None),
        (f"sha256_{HEX}.sig", None),
    ],
)
def test_which_tags_are_attachments_and_of_what(tag, expected):
    assert attachment_of(tag) == expected


@pytest.mark.parametrize("kind", list(Attached))
def test_the_tags_written_are_the_tags_recognised(kind):
    assert attachment_of(attachment_tag(DIGEST, kind)) == AttachmentTag(DIGEST, kind)


def test_cosigns_names():
    assert signature_tag(DIGEST) == f"sha256-{HEX}.sig"
    assert referrers_tag(DIGEST) == f"sha256-{HEX}"
    assert [kind.noun for kind in Attached] == ["signature", "attestation", "SBOM", "referrers index"]
