"""Leader election on a coordination.k8s.io Lease: of several warmers, one runs the Pod watch.

The algorithm is client-go's. A replica takes the Lease when it does not exist, has no holder, or its
record (holder and renewTime) has not changed for leaseDurationSeconds as measured on this replica's
own clock, so clocks need not agree across nodes. The leader renews every `lease_seconds / 5`; one that
cannot renew for two thirds of the lease stops leading before anyone may take over. Every write is a
replace with the resourceVersion read, so two replicas racing for the Lease cannot both win. A leader
that stops cleanly releases the Lease (no holder), and the next replica takes it at once.
"""

from __future__ import annotations

import datetime
import enum
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

log = logging.getLogger("webhook.kube.lease")


class _Outcome(enum.Enum):
    MINE = "mine"  # we hold the Lease now
    OTHERS = "others"  # someone else holds it
    UNKNOWN = "unknown"  # the API server did not say


class LeaderElection:
    """Runs `on_started` when this replica becomes the leader and `on_stopped` when it stops being one."""

    def __init__(
        self,
        coordination: client.CoordinationV1Api,
        *,
        name: str,
        namespace: str,
        identity: str,
        lease_seconds: float,
        on_started: Callable[[], None],
        on_stopped: Callable[[], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._api = coordination
        self._name, self._namespace, self.identity = name, namespace, identity
        self._duration = max(1, math.ceil(lease_seconds))
        self._retry = lease_seconds / 5
        self._renew_deadline = lease_seconds * 2 / 3
        self._on_started, self._on_stopped = on_started, on_stopped
        self._clock = clock
        self._observed: tuple[Any, ...] | None = None
        self._observed_at = 0.0
        self._renewed_at = 0.0
        self._leading = False
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def leading(self) -> bool:
        """Whether this replica is the leader now."""
        return self._leading

    @property
    def alive(self) -> bool:
        """Whether the election loop runs."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> LeaderElection:
        """Start campaigning in a background thread."""
        self._thread = threading.Thread(target=self._run, name="leader-election", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop campaigning; a leader stops leading and releases the Lease."""
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stopped.is_set():
            try:
                self.campaign_once()
            except Exception:
                log.exception("leader election round failed")
            self._stopped.wait(self._retry)
        if self._leading:
            self._step_down("stopping")
            self._release()

    def campaign_once(self) -> bool:
        """One round: take or renew the Lease, and start or stop leading accordingly; whether this replica leads."""
        outcome = self._try()
        now = self._clock()
        if outcome is _Outcome.MINE:
            self._renewed_at = now
            if not self._leading:
                self._leading = True
                log.info("leading: holding Lease %s/%s as %s", self._namespace, self._name, self.identity)
                self._on_started()
        elif self._leading and (outcome is _Outcome.OTHERS or now - self._renewed_at > self._renew_deadline):
            self._step_down(
                "the Lease went to another replica" if outcome is _Outcome.OTHERS else "could not renew the Lease"
            )
        return self._leading

    def _step_down(self, why: str) -> None:
        self._leading = False
        log.log(logging.INFO if self._stopped.is_set() else logging.WARNING, "no longer leading: %s", why)
        self._on_stopped()

    def _try(self) -> _Outcome:
        """Read the Lease and take or renew it if this replica may."""
        try:
            lease = self._api.read_namespaced_lease(self._name, self._namespace)
        except ApiException as err:
            if err.status != 404:
                return self._unknown(err)
            return self._write(lambda: self._api.create_namespaced_lease(self._namespace, self._new_lease()))
        except (urllib3.exceptions.HTTPError, OSError) as err:
            return self._unknown(err)
        spec = lease.spec or client.V1LeaseSpec()
        holder = spec.holder_identity
        record = (holder, spec.renew_time, spec.lease_duration_seconds)
        now = self._clock()
        if record != self._observed:
            self._observed, self._observed_at = record, now
        duration = spec.lease_duration_seconds or self._duration
        if holder and holder != self.identity and now < self._observed_at + duration:
            return _Outcome.OTHERS
        stamp = _now()
        if holder != self.identity:
            spec.acquire_time = stamp
            spec.lease_transitions = (spec.lease_transitions or 0) + 1
        spec.holder_identity, spec.renew_time, spec.lease_duration_seconds = self.identity, stamp, self._duration
        lease.spec = spec
        return self._write(lambda: self._api.replace_namespaced_lease(self._name, self._namespace, lease))

    def _write(self, call: Callable[[], Any]) -> _Outcome:
        """MINE if the write went through, OTHERS if another replica's write came first."""
        try:
            call()
        except ApiException as err:
            return _Outcome.OTHERS if err.status == 409 else self._unknown(err)
        except (urllib3.exceptions.HTTPError, OSError) as err:
            return self._unknown(err)
        return _Outcome.MINE

    def _unknown(self, err: Exception) -> _Outcome:
        log.warning("Lease %s/%s: %s", self._namespace, self._name, getattr(err, "reason", None) or err)
        return _Outcome.UNKNOWN

    def _new_lease(self) -> client.V1Lease:
        stamp = _now()
        return client.V1Lease(
            metadata=client.V1ObjectMeta(name=self._name, namespace=self._namespace),
            spec=client.V1LeaseSpec(
                holder_identity=self.identity,
                lease_duration_seconds=self._duration,
                acquire_time=stamp,
                renew_time=stamp,
                lease_transitions=0,
            ),
        )

    def _release(self) -> None:
        """Give the Lease up (no holder), so the next replica need not wait for it to expire."""
        try:
            lease = self._api.read_namespaced_lease(self._name, self._namespace)
            if lease.spec is None or lease.spec.holder_identity != self.identity:
                return
            lease.spec.holder_identity, lease.spec.renew_time, lease.spec.lease_duration_seconds = None, _now(), 1
            self._api.replace_namespaced_lease(self._name, self._namespace, lease)
            log.info("released Lease %s/%s", self._namespace, self._name)
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as err:
            log.warning("could not release Lease %s/%s: %s", self._namespace, self._name, err)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)
