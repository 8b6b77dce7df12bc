"""The node side: the agent that lets containerd reach and trust the CCR, and pull from upstream while it is down."""
