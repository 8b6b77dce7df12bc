"""The resolver's bulkhead alone: a share of the threads per key, a bounded queue per key, cancelled tasks skipped."""

import threading

import pytest

from webhook.registry import bulkhead
from webhook.registry.bulkhead import Bulkhead, BulkheadFull


def test_a_key_runs_at_most_its_share_queues_the_rest_boundedly_and_skips_what_was_cancelled(monkeypatch):
    monkeypatch.setattr(bulkhead, "MAX_QUEUED_PER_KEY", 2)
    gate, ran = threading.Event(), []

    def held(name):
        ran.append(name)
        gate.wait(10)
        return name

    pool = Bulkhead(threads=3, per_key=1, name="test")
    first = pool.submit("slow", held, "first")
    queued, cancelled = pool.submit("slow", held, "queued"), pool.submit("slow", held, "cancelled")
    with pytest.raises(BulkheadFull, match="more than 2 lookups already wait"):
        pool.submit("slow", held, "over the cap").result(1)
    assert cancelled.cancel()
    assert pool.submit("other", lambda: "other runs").result(5) == "other runs"  # not behind the slow key
    assert ran == ["first"]
    gate.set()
    assert (first.result(5), queued.result(5)) == ("first", "queued")
    assert ran == ["first", "queued"]  # the cancelled one never ran
