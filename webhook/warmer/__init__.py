"""The warmer: the sidecar that copies each new image into the CCR on first sight, and loses nothing."""
