"""One hierarchy for the errors ccr-webhook raises on purpose, so a caller can catch "ours" in one clause.

Every error below carries a message written for a cluster operator (what is wrong, which key, image or
registry, what to do). Each class lives beside the code that raises it (modules below are under `webhook.`);
this module holds the base and the map:

    CCRWebhookError
    ├── ConfigError                  config.checks: the configuration is invalid; names the key and what is expected
    │   └── Invalid                    one value failed its check; the reader puts the key's path in front
    ├── InvalidImageReference        policy.reference: an image string the reference grammar refuses, and why
    ├── BadReview                    policy.review: a body that is not an AdmissionReview v1 for a Pod (a 400)
    ├── ManifestError                policy.workloads: text that is not a readable manifest; source and line
    ├── PodSpecError                 policy.workloads: a pod spec's container lists are malformed; where
    ├── NotMirrored                  policy.decide: an image no configured upstream serves
    ├── InvalidPublicKey             policy.signatures: a verification key that cannot check cosign signatures
    ├── RegistryError                registry.errors: a registry operation failed; what, and which registry
    │   ├── RegistryUnavailable        not reached or no proper answer in time (refused, timeout, 5xx): transient
    │   │   └── RegistryServerError    it answered 5xx: reached, but failing on its side
    │   │   └── TransferTooSlow          registry.streams: a blob transfer below its MinimumRate or past its deadline
    │   ├── RateLimited                429, with the Retry-After it asked for: transient
    │   ├── RegistryAuthError          refused (401/403) even after authenticating, or no way to authenticate
    │   ├── NotFound                   no such manifest, blob or repository (404)
    │   ├── RegistryProtocolError      an answer we cannot use (unexpected status, garbage, digest mismatch)
    │   │   └── CopyLimitExceeded        copier.engine: an image over a `copy` limit; names the key
    │   ├── InsufficientStorage        no room to store it (507): the CCR front over its storage budget
    │   └── RegistryNotAllowed         a registry the configuration does not list; never contacted
    ├── EgressRefused                registry.egress: a redirect or token realm we may not contact, and why
    ├── BulkheadFull                 registry.bulkhead: too many lookups already wait for one registry; not queued
    ├── CopyError                    copier.engine: a copy failed; names the image and the step, says if retryable
    ├── CopyAborted                  copier.blobs: another part of the copy failed, so this blob stopped early
    ├── FlightFailed                 front.flights: a blob fetch of the CCR front failed; why, and the metrics outcome
    │   ├── SpoolFull                  the spool (or the table of fetches) has no room: try again later
    │   └── OverBudget                 the blob does not fit under the CCR's storage budget (retention.maxBytes)
    ├── PeerUnavailable              front.peers: the owning replica could not serve a blob; the next in rank is asked
    ├── Refused                      front.answers: a request the front answers with an error; its table gives each
    │   │                              subclass its status and OCI code
    │   ├── NotAPullPath, NameInvalid, TagInvalid, DigestInvalid, PaginationInvalid   outside the grammar (4xx)
    │   ├── PullOnly, PeerUnauthorized, Misdirected      a write, a peer without the secret, a peer that follows
    │   ├── ManifestUnknown, BlobUnknown, RangeNotSatisfiable   not there, or not that range
    │   ├── ReferrersUnsupported                         no referrers API, in the CCR nor upstream (a 404)
    │   └── CCRUnreachable, UpstreamUnavailable          the CCR registry or an upstream did not answer properly
    ├── BadHints                     hints: a hint body that is not the protocol's JSON
    ├── NotWarmed                    warmer.sightings: an image the warmer does not copy, and why
    ├── CertificateError             tls: a certificate, key or chain is unusable; which and why
    ├── BootstrapError               tls: the certificate bootstrap cannot do its job; what to look at
    ├── NoCluster                    kube.client: no way to reach a Kubernetes API (not in a Pod, no kubeconfig)
    ├── CannotListen                 listen: another process listens on the address this one must serve
    └── UsageError                   commands: the command line names something unusable (a missing file, ...)

`webhook.cli` turns any of these reaching it into one line on stderr and exit code 2 (1 for a registry
or copy that failed), so a user error never shows a traceback; anything else still does, as a bug.

Plain ValueError and TypeError still mean a programming error (an argument out of its contract), not
something an operator or a remote party did.

Internal control flow (`webhook.kube.informer._Expired`, a watch that must list again;
`webhook.policy.signatures._Malformed`, a signature that cannot be read, which becomes a verdict) derives from it
too, so the one rule holds without exceptions; the test harness (`webhook.testing`) is not part of the
product and keeps its own.
"""


class CCRWebhookError(Exception):
    """The base of every error ccr-webhook raises on purpose."""
