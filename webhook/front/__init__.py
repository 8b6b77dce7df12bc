"""The CCR front: the pull endpoint nodes reach as the CCR, serving held content from the CCR registry and
fetching a miss under a configured upstream once, streamed to every reader as it arrives, then committed."""
