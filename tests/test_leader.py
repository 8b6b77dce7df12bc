"""Leader election on a Lease, against the fake API server through the real kubernetes client; time is a fake clock."""

from __future__ import annotations

import pytest
from kubernetes import client

from tests.support.clock import Clock
from tests.support.waiting import wait_until
from webhook.kube.lease import LeaderElection
from webhook.testing.apiserver import LocalAPIServer

pytestmark = pytest.mark.integration


@pytest.fixture
def api():
    with LocalAPIServer() as server:
        yield server


def candidate(api, identity, clock, log):
    coordination = client.CoordinationV1Api(api.api_client())
    return LeaderElection(
        coordination,
        name="warmer",
        namespace="ccr-system",
        identity=identity,
        lease_seconds=10,
        on_started=lambda: log.append(f"{identity} leads"),
        on_stopped=lambda: log.append(f"{identity} stops"),
        clock=clock,
    )


def holder(api):
    lease = api.get("Lease", "warmer", "ccr-system")
    return lease and lease["spec"].get("holderIdentity")


def test_one_leader_and_a_takeover_once_its_lease_expires(api):
    clock, log = Clock(0.0), []
    first, second = candidate(api, "a", clock, log), candidate(api, "b", clock, log)
    assert first.campaign_once() and not second.campaign_once()
    clock.now += 5
    assert first.campaign_once() and not second.campaign_once()  # renewed: b saw the record change
    clock.now += 9
    assert not second.campaign_once()  # 9 s since b saw the last renewal: not expired yet
    clock.now += 2
    assert second.campaign_once() and holder(api) == "b"  # a stopped renewing (it died): b takes over
    assert api.get("Lease", "warmer", "ccr-system")["spec"]["leaseTransitions"] == 1
    assert not first.campaign_once() and not first.leading  # a, back, finds b holding it and steps down
    assert log == ["a leads", "b leads", "a stops"]


def test_a_leader_that_cannot_renew_steps_down_before_anyone_may_take_over(api):
    clock, log = Clock(0.0), []
    leader = candidate(api, "a", clock, log)
    assert leader.campaign_once()
    api.fail_next(503, method="GET", path_contains="/leases/", times=10)
    clock.now += 4
    assert leader.campaign_once()  # one failed renewal is within the renew deadline (2/3 of 10 s)
    clock.now += 3
    assert not leader.campaign_once() and log == ["a leads", "a stops"]


def test_a_leader_that_stops_releases_the_lease_for_the_next_at_once(api):
    clock, log = Clock(0.0), []
    first, second = candidate(api, "a", clock, log), candidate(api, "b", clock, log)
    first.start()
    wait_until(lambda: holder(api) == "a", what="a taking the Lease")
    assert not second.campaign_once()
    first.stop()
    assert holder(api) is None and log == ["a leads", "a stops"]
    assert second.campaign_once() and holder(api) == "b"  # no wait for the lease to expire


def test_a_takeover_that_loses_the_race_for_the_lease_does_not_lead(api):
    clock, log = Clock(0.0), []
    first, second = candidate(api, "a", clock, log), candidate(api, "b", clock, log)
    assert first.campaign_once() and not second.campaign_once()
    clock.now += 11
    api.fail_next(409, method="PUT", path_contains="/leases/warmer")  # another replica's write came first
    assert not second.campaign_once() and log == ["a leads"]
