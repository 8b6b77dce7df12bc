"""Retention: keep the CCR lean without deleting what a workload will pull again (issue #7)."""
