"""One hierarchy for the errors ccr-webhook raises on purpose, so a caller can catch "ours" in one clause.

Every error below carries a message written for a cluster operator (what is wrong, which key, image or
registry, what to do). Each class lives beside the code that raises it; this module holds the base and the map:

    CCRWebhookError
    ├── ConfigError                      webhook.config.checks: the configuration names a bad key or value
    │   └── Invalid                        one value failed its check (the reader adds the key's path)
    ├── InvalidImageReference            webhook.policy.reference: an image string outside the grammar
    ├── BadReview                        webhook.policy.review: an AdmissionReview that cannot be answered
    ├── ManifestError                    webhook.policy.workloads: a Kubernetes manifest that is not a workload
    ├── NotMirrored                      webhook.policy.decide: an image under no configured upstream
    ├── RegistryError                    webhook.registry.errors: a registry answered badly or not at all
    │   ├── RegistryUnavailable            down, slow, refused, TLS failed (worth retrying)
    │   ├── RegistryAuthError              401/403 after authenticating
    │   ├── NotFound                       404: no such manifest, tag or blob
    │   ├── RateLimited                    429, with the Retry-After it gave
    │   ├── RegistryProtocolError          an answer that breaks the distribution protocol
    │   └── RegistryNotAllowed             an address the configuration does not allow (after DNS)
    ├── CopyError                        webhook.copier.engine: an image could not be copied into the CCR
    ├── CopyAborted                      webhook.copier.blobs: a copy was stopped (shutdown, lost lease)
    ├── BadHints                         webhook.hints: a hint body the warmer refuses
    ├── NotWarmed                        webhook.warmer.sightings: a sighting that names nothing to warm
    ├── CertificateError                 webhook.tls: a certificate or key that cannot serve
    └── BootstrapError                   webhook.tls: the serving certificate could not be set up in the cluster

Internal control flow (`webhook.retention.watch._Relist`) derives from it too, so the one rule holds without
exceptions; the test harness (`webhook.testing`) is not part of the product and keeps its own.
"""


class CCRWebhookError(Exception):
    """The base of every error ccr-webhook raises on purpose."""
