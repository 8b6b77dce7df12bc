"""The resolver's cache, sharing and deadline, with the in-process registry fake standing in for the network.

The real registry client is exercised against real registries in the admission integration tests;
here the point is timing and concurrency, which plain objects make exact.
"""

import threading
import time

import pytest

from tests.support.clock import Clock
from tests.support.fake_registry import FakeRegistries, FakeRegistry
from tests.support.waiting import deadline_ceiling, wait_until
from webhook.config import parse_config
from webhook.policy.decide import Action, ImageFacts, Lookup, plan_image
from webhook.registry.errors import NotFound, RateLimited, RegistryAuthError, RegistryUnavailable
from webhook.registry.evaluate import evaluate_images
from webhook.registry.resolver import Resolver

D1 = "sha256:" + "1" * 64
CONFIG = parse_config(
    {
        "ccr": {"registry": "ccr:5000"},
        "upstreams": [{"registry": "up.io"}],
        "policy": {"swap": "exists"},  # the CCR's answer decides rewrite or pin
        "resolver": {"cacheSeconds": 60, "ccrCacheSeconds": 30, "negativeCacheSeconds": 5},
    }
)


def lookup(image="up.io/app:1"):
    plan = plan_image(image, CONFIG)
    assert isinstance(plan, Lookup)
    return plan


def make(upstream=None, ccr=None, **kwargs):
    upstream = upstream or FakeRegistry({("app", "1"): D1})
    ccr = ccr or FakeRegistry(held={("up.io/app", D1)})
    observed = []  # (result, registry) of every lookup counted
    resolver = Resolver(
        CONFIG, FakeRegistries(upstream, ccr), observe=lambda *labels: observed.append(labels), **kwargs
    )
    return resolver, upstream, ccr, observed


def counted(observed):
    return [result for result, _ in observed]


def test_gathers_digest_and_ccr_presence_then_answers_from_cache():
    resolver, upstream, ccr, observed = make()
    assert resolver.gather([lookup()], 2) == [ImageFacts(digest=D1, in_ccr=True)]
    assert resolver.gather([lookup()], 2) == [ImageFacts(digest=D1, in_ccr=True)]
    assert len(upstream.calls) == 1 and len(ccr.calls) == 1
    assert observed == [("miss", "up.io"), ("hit", "up.io")]


def test_cache_expires_by_its_ttls():
    clock = Clock()
    resolver, upstream, ccr, _ = make(clock=clock)
    resolver.gather([lookup()], 2)
    clock.now += 31  # past ccrCacheSeconds, within cacheSeconds
    resolver.gather([lookup()], 2)
    assert (len(upstream.calls), len(ccr.calls)) == (1, 2)
    clock.now += 61
    resolver.gather([lookup()], 2)
    assert (len(upstream.calls), len(ccr.calls)) == (2, 3)


def test_errors_are_reported_and_cached_briefly():
    clock = Clock()
    upstream = FakeRegistry(error=ConnectionError("upstream up.io refused the connection"))
    resolver, upstream, ccr, observed = make(upstream=upstream, clock=clock)
    facts = resolver.gather([lookup()], 2)
    assert facts == [ImageFacts(resolve_error="upstream up.io refused the connection")]
    resolver.gather([lookup()], 2)
    assert len(upstream.calls) == 1 and ccr.calls == []
    clock.now += 6
    resolver.gather([lookup()], 2)
    assert len(upstream.calls) == 2
    assert ("error", "up.io") in observed


def test_an_error_at_the_ccr_is_counted_for_the_ccr_not_for_the_upstream():
    resolver, _, _, observed = make(ccr=FakeRegistry(error=ConnectionError("ccr refused the connection")))
    assert resolver.gather([lookup()], 2)[0].digest == D1
    assert observed == [("miss", "up.io"), ("error", "ccr:5000")]


def test_a_rate_limited_lookup_is_not_repeated_before_retry_after_nor_past_the_cache_time():
    clock = Clock()
    upstream = FakeRegistry(error=RateLimited("HEAD manifest 1: rate limited, HTTP 429", 30))
    resolver, upstream, _, _ = make(upstream=upstream, clock=clock)
    assert "rate limited" in resolver.gather([lookup()], 2)[0].resolve_error
    clock.now += 29  # past negativeCacheSeconds, within Retry-After
    resolver.gather([lookup()], 2)
    assert len(upstream.calls) == 1
    clock.now += 2
    resolver.gather([lookup()], 2)
    assert len(upstream.calls) == 2
    upstream.error = RateLimited("HEAD manifest 1: rate limited, HTTP 429", 86400)
    clock.now += 31
    resolver.gather([lookup()], 2)
    clock.now += 61  # a day's Retry-After is held no longer than cacheSeconds
    resolver.gather([lookup()], 2)
    assert len(upstream.calls) == 4


D2 = "sha256:" + "2" * 64


@pytest.mark.parametrize(
    "error",
    [
        RegistryUnavailable("HEAD manifest 1: cannot connect: connection refused"),
        RegistryUnavailable("HEAD manifest 1: registry error, HTTP 503"),
        RateLimited("HEAD manifest 1: rate limited, HTTP 429", 30),
    ],
    ids=["down", "5xx", "429"],
)
def test_a_tag_the_upstream_cannot_be_asked_about_is_looked_up_in_the_ccr(error):
    ccr = FakeRegistry({("up.io/app", "1"): D2})
    resolver, _, ccr, _ = make(upstream=FakeRegistry(error=error), ccr=ccr)
    [facts] = resolver.gather([lookup()], 2)
    assert facts.digest is None and facts.ccr_digest == D2 and facts.upstream_unavailable and not facts.tag_missing
    assert ("resolve_digest", "up.io/app", "1") in ccr.calls
    assert resolver.gather([lookup()], 2)[0].ccr_digest == D2  # both answers cached
    assert len(ccr.calls) == 1


@pytest.mark.parametrize("error", [NotFound("manifest", "1"), RegistryAuthError("HEAD manifest 1: access denied")])
def test_an_upstream_that_answers_no_is_not_overruled_by_the_ccr(error):
    resolver, _, ccr, _ = make(upstream=FakeRegistry(error=error), ccr=FakeRegistry({("up.io/app", "1"): D2}))
    [facts] = resolver.gather([lookup()], 2)
    assert facts.ccr_digest is None and not facts.upstream_unavailable and ccr.calls == []
    assert facts.tag_missing is isinstance(error, NotFound)  # only a 404 says the tag does not exist


def test_a_missing_tag_stays_known_as_missing_from_the_cache():
    clock = Clock()
    resolver, upstream, _, _ = make(upstream=FakeRegistry({}), clock=clock)
    assert resolver.gather([lookup()], 2)[0].tag_missing
    clock.now += 4  # within negativeCacheSeconds
    assert resolver.gather([lookup()], 2)[0].tag_missing and len(upstream.calls) == 1


def test_a_silent_upstream_leaves_a_quarter_of_the_deadline_to_ask_the_ccr():
    upstream = FakeRegistry({("app", "1"): D1})
    upstream.gate.clear()
    resolver, _, _, _ = make(upstream=upstream, ccr=FakeRegistry({("up.io/app", "1"): D2}))
    [facts] = resolver.gather([lookup()], 0.8)
    upstream.gate.set()
    assert facts.digest is None and facts.ccr_digest == D2 and "no answer" in facts.resolve_error


def test_concurrent_requests_for_one_tag_share_one_lookup():
    upstream = FakeRegistry({("app", "1"): D1})
    upstream.gate.clear()
    resolver, upstream, _, observed = make(upstream=upstream)
    results = []
    threads = [threading.Thread(target=lambda: results.append(resolver.gather([lookup()], 5))) for _ in range(8)]
    for thread in threads:
        thread.start()
    wait_until(lambda: counted(observed).count("miss") == 8, timeout=10, what="every request missing the cache")
    upstream.gate.set()
    for thread in threads:
        thread.join(5)
    assert len(upstream.calls) == 1
    assert results == [[ImageFacts(digest=D1, in_ccr=True)]] * 8


def test_all_images_of_a_pod_are_resolved_concurrently():
    upstream = FakeRegistry({(f"app{i}", "1"): D1 for i in range(4)})
    upstream.gate.clear()
    resolver, upstream, _, _ = make(upstream=upstream, ccr=FakeRegistry())
    answers = []
    pod = threading.Thread(
        target=lambda: answers.append(resolver.gather([lookup(f"up.io/app{i}:1") for i in range(4)], 10))
    )
    pod.start()
    # all four lookups are in flight at once, before any is answered
    wait_until(lambda: len(upstream.calls) == 4, timeout=10, what="four lookups in flight")
    upstream.gate.set()
    pod.join(10)
    assert [f.digest for f in answers[0]] == [D1] * 4


def test_answers_by_the_deadline_and_fills_the_cache_afterwards():
    upstream = FakeRegistry({("app", "1"): D1})
    upstream.gate.clear()
    resolver, upstream, _, _ = make(upstream=upstream)
    started = time.monotonic()
    facts = resolver.gather([lookup()], 0.2)
    assert 0.15 <= time.monotonic() - started < deadline_ceiling(0.2)  # it waited the deadline, and no longer
    assert facts[0].digest is None and "within 0.2 s" in facts[0].resolve_error
    upstream.gate.set()
    wait_until(
        lambda: resolver.gather([lookup()], 0.5) == [ImageFacts(digest=D1, in_ccr=True)], what="the cache filled"
    )
    assert len(upstream.calls) == 1


def test_a_silent_ccr_keeps_the_digest_learned_in_time_so_the_image_is_still_pinned():
    ccr = FakeRegistry(held={("up.io/app", D1)})
    ccr.gate.clear()
    resolver, _, ccr, _ = make(ccr=ccr)
    try:
        assert resolver.gather([lookup()], 0.2) == [ImageFacts(digest=D1)]
        [decision] = evaluate_images(["up.io/app:1"], CONFIG, resolver, 0.2)
        assert decision.action is Action.PIN and decision.new_image == f"up.io/app:1@{D1}"
    finally:
        ccr.gate.set()


def test_lookups_still_queued_at_the_deadline_are_dropped_so_the_next_pod_is_not_held_up():
    upstream = FakeRegistry({(f"app{i}", "1"): D1 for i in range(101)})
    upstream.gate.clear()
    resolver, upstream, _, _ = make(upstream=upstream)
    many = resolver.gather([lookup(f"up.io/app{i}:1") for i in range(100)], 0.2)
    assert all(facts.digest is None for facts in many)
    upstream.gate.set()
    assert resolver.gather([lookup("up.io/app100:1")], 2)[0].digest == D1
    assert len(upstream.calls) <= CONFIG.resolver.max_concurrency + 1  # the pool's threads' worth, then the next Pod


def test_mark_and_forget_ccr():
    resolver, _, ccr, _ = make(ccr=FakeRegistry())
    assert resolver.gather([lookup()], 2)[0].in_ccr is False
    resolver.mark_in_ccr("up.io/app", D1)
    assert resolver.gather([lookup()], 2)[0].in_ccr is True
    resolver.forget_ccr("up.io/app", D1)
    assert resolver.gather([lookup()], 2)[0].in_ccr is False
    assert len(ccr.calls) == 2


def test_evaluate_images_keeps_order_and_mixes_plans_and_lookups():
    resolver, *_ = make()
    decisions = evaluate_images(["up.io/app:1", "nginx:latest", "other.io/x:1"], CONFIG, resolver, 2)
    assert [d.action for d in decisions] == [Action.REWRITE, Action.DENY, Action.LEAVE]
    assert decisions[0].new_image == f"ccr:5000/up.io/app:1@{D1}"


@pytest.mark.parametrize("images", [[], ["nginx:latest"]])
def test_evaluate_without_lookups_never_asks(images):
    resolver, upstream, ccr, _ = make()
    evaluate_images(images, CONFIG, resolver, 2)
    assert upstream.calls == [] and ccr.calls == []


def test_a_lookup_stuck_past_a_whole_deadline_is_not_waited_for_again():
    clock = Clock()
    upstream = FakeRegistry({("app", "1"): D1})
    upstream.gate.clear()
    resolver, upstream, _, observed = make(upstream=upstream, clock=clock)
    first = resolver.gather([lookup()], 0.1)  # waits its deadline (real time), the lookup stays in flight
    assert "within 0.1 s" in first[0].resolve_error
    clock.now += 5  # the in-flight lookup is now older than the next caller's whole deadline
    second = resolver.gather([lookup()], 2)
    assert "has not answered for 5 s" in second[0].resolve_error  # not "within 2 s": it did not wait
    assert len(upstream.calls) == 1 and ("error", "up.io") in observed
    upstream.gate.set()


def test_a_slow_upstream_holds_only_its_share_of_the_threads_and_every_lookup_has_the_total_deadline():
    config = parse_config(
        {
            "ccr": {"registry": "ccr:5000"},
            "upstreams": [{"registry": "up.io"}, {"registry": "slow.io"}],
            "resolver": {"maxConcurrency": 4, "lookupTimeoutSeconds": 7},
        }
    )
    slow, fast = FakeRegistry({(f"app{i}", "1"): D1 for i in range(8)}), FakeRegistry({("app", "1"): D1})
    slow.gate.clear()
    timeouts = []

    class Registries:
        ccr = FakeRegistry(held={("up.io/app", D1)})

        def upstream(self, registry):
            return {"up.io": fast, "slow.io": slow}[registry]

    fast.resolve_digest = lambda repository, reference, timeout=None: timeouts.append(timeout) or D1
    resolver = Resolver(config, Registries())
    try:
        flood = [plan_image(f"slow.io/app{i}:1", config) for i in range(8)]
        assert all(facts.digest is None for facts in resolver.gather(flood, 0.2))
        assert len(slow.calls) == config.resolver.max_concurrency_per_registry == 2  # its share, the rest queued
        assert resolver.gather([plan_image("up.io/app:1", config)], 2) == [ImageFacts(digest=D1, in_ccr=True)]
        assert timeouts == [7]
    finally:
        slow.gate.set()
