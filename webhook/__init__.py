"""ccr-webhook: rewrite Pod images to a Cluster Container Registry, pin them to digests, warm the cache."""
