"""Registry facts for the policy, fast and within a deadline.

Answers come from a TTL cache when it can; misses go to the registries on a bounded thread pool, all
images of a Pod at once, and one in-flight lookup is shared by every request that wants the same
answer. The pool is bulkheaded per upstream (`maxConcurrencyPerRegistry`), so a slow upstream holds
only its share of the threads. A lookup that outlives the caller's deadline keeps running (within
`lookupTimeoutSeconds` in all, however slowly a registry sends) and fills the cache for the next
request, but the caller is answered on time with what is known ("unknown" for the rest); one that had
not started by then is dropped.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future, wait
from dataclasses import dataclass, replace
from typing import Any, Protocol, TypeVar

from webhook.config import Config
from webhook.policy.decide import ImageFacts, Lookup
from webhook.policy.signatures import Verdict, public_keys
from webhook.registry.bulkhead import Bulkhead, BulkheadFull
from webhook.registry.errors import NotFound, RateLimited, RegistryUnavailable
from webhook.registry.signatures import SignatureReader, check_signatures

# Share of the deadline kept for asking the CCR about a tag whose upstream has not answered by then.
CCR_FALLBACK_SHARE = 0.25
_T = TypeVar("_T")


class RegistryReader(SignatureReader, Protocol):
    """What the resolver asks of a registry client."""

    def resolve_digest(self, repository: str, reference: str, timeout: float | None = None) -> str: ...

    def has_manifest(self, repository: str, digest: str, timeout: float | None = None) -> bool: ...


class RegistrySource(Protocol):
    """Where the resolver finds the registry clients: the CCR, and each configured upstream."""

    @property
    def ccr(self) -> RegistryReader: ...

    def upstream(self, registry: str) -> RegistryReader: ...


@dataclass(frozen=True, slots=True)
class _Answer:
    """A cached answer: a value, or the error text that stood in for it, until `expires`."""

    value: Any
    error: str | None
    expires: float
    unavailable: bool = False  # the registry could not be asked (down, 429, 5xx, no answer): not a "no"
    missing: bool = False  # the registry answered that there is no such tag or repository (404): a "no"


class Resolver:
    """Gathers ImageFacts for policy Lookups: upstream digests of tags, and whether the CCR holds digests."""

    def __init__(
        self,
        config: Config,
        registries: RegistrySource,
        *,
        observe: Callable[[str, str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._registries = registries
        self._observe = observe or (lambda result, registry: None)
        self._clock = clock
        self._cache: dict[Hashable, _Answer] = {}
        self._in_flight: dict[Hashable, tuple[Future[_Answer], float]] = {}
        self._lock = threading.Lock()
        self._pool: Bulkhead | None = None

    def gather(self, lookups: Sequence[Lookup], timeout: float) -> list[ImageFacts]:
        """Facts for each lookup, returned within `timeout` seconds; what is not known by then is None.

        A tag whose upstream cannot be asked (down, rate limited, failing, or silent past most of the
        deadline) is looked up in the CCR too, in the time left: its copy there was verified upstream.
        """
        deadline = self._clock() + timeout
        facts: list[ImageFacts | None] = [
            self._from_cache(lookup) or self._stuck(lookup, timeout) for lookup in lookups
        ]
        pending = {
            i: self._pool_submit(lookup.upstream.registry, self._facts_for, lookup)
            for i, lookup in enumerate(lookups)
            if facts[i] is None
        }
        if pending:
            wait(pending.values(), timeout=max(0.0, deadline - timeout * CCR_FALLBACK_SHARE - self._clock()))
        for i, future in pending.items():
            if future.done() and future.exception() is None:
                facts[i] = future.result()
        fallbacks = {
            i: self._pool_submit(self._config.ccr.registry, self._ccr_fallback, lookup)
            for i, lookup in enumerate(lookups)
            if lookup.need_digest and lookup.source.tag is not None and _upstream_unavailable(facts[i])
        }
        everything: list[Future[Any]] = [*pending.values(), *fallbacks.values()]
        if everything:
            wait(everything, timeout=max(0.0, deadline - self._clock()))
        for i, future in pending.items():
            if facts[i] is None:
                done = future.done() and future.exception() is None
                facts[i] = future.result() if done else self._timed_out(lookups[i], timeout, future)
        for i, fallback in fallbacks.items():
            fact = facts[i]
            if fallback.done() and fallback.exception() is None and fact is not None and fact.digest is None:
                ccr_digest, signature = fallback.result()
                facts[i] = replace(fact, ccr_digest=ccr_digest, signature=signature)
        for future in everything:  # one still queued for a thread is dropped: a Pod of thousands of images
            future.cancel()  # must not hold up the lookups of the Pods that come after it
        return [fact if fact is not None else ImageFacts() for fact in facts]

    def mark_in_ccr(self, repository: str, digest: str) -> None:
        """Record that the CCR now holds `repository@digest` (a warm just finished)."""
        self._store(
            ("ccr", repository, digest), _Answer(True, None, self._clock() + self._config.resolver.ccr_cache_seconds)
        )

    def forget_ccr(self, repository: str, digest: str) -> None:
        """Drop what is known about `repository@digest` in the CCR (it was evicted)."""
        with self._lock:
            self._cache.pop(("ccr", repository, digest), None)

    # -- lookups -----------------------------------------------------------------------------------

    def _from_cache(self, lookup: Lookup, count_hit: bool = True) -> ImageFacts | None:
        """The facts for `lookup` if every one it needs is cached and fresh, else None."""
        digest, error, unavailable, missing = lookup.source.digest, None, False, False
        if lookup.need_digest:
            answer = self._cached(self._digest_key(lookup))
            if answer is None:
                return None
            digest, error, unavailable, missing = answer.value, answer.error, answer.unavailable, answer.missing
        in_ccr = None
        if lookup.need_ccr and digest is not None:
            answer = self._cached(self._ccr_key(lookup, digest))
            if answer is None:
                return None
            in_ccr = answer.value
        signature = None
        if lookup.verify is not None and digest is not None:
            answer = self._cached(self._signature_key(lookup, digest))
            if answer is None:
                return None
            signature = answer.value
        if count_hit:
            self._observe("hit", lookup.upstream.registry)
        return _facts(lookup, digest, error, unavailable, in_ccr, missing, signature)

    def _facts_for(self, lookup: Lookup) -> ImageFacts:
        """Ask the registries (sharing in-flight lookups) for what `lookup` needs."""
        self._observe("miss", lookup.upstream.registry)
        digest, error, unavailable, missing = lookup.source.digest, None, False, False
        if lookup.need_digest:
            answer = self._shared(self._digest_key(lookup), self._ask_digest, lookup)
            digest, error, unavailable, missing = answer.value, answer.error, answer.unavailable, answer.missing
        in_ccr = None
        if lookup.need_ccr and digest is not None:
            in_ccr = self._shared(self._ccr_key(lookup, digest), self._ask_ccr, lookup, digest).value
        signature = None
        if lookup.verify is not None and digest is not None:
            key = self._signature_key(lookup, digest)
            signature = self._shared(key, self._ask_signature, lookup, digest, in_ccr).value
        return _facts(lookup, digest, error, unavailable, in_ccr, missing, signature)

    def _ask_digest(self, lookup: Lookup) -> _Answer:
        source = lookup.source
        settings = self._config.resolver
        try:
            client = self._registries.upstream(lookup.upstream.registry)
            digest = client.resolve_digest(
                source.repository, source.tag or "latest", timeout=settings.lookup_timeout_seconds
            )
        except Exception as err:
            self._observe("error", lookup.upstream.registry)
            unavailable = isinstance(err, (RegistryUnavailable, RateLimited))
            expires = self._clock() + self._error_seconds(err)
            return _Answer(None, _describe(err), expires, unavailable, missing=isinstance(err, NotFound))
        return _Answer(digest, None, self._clock() + settings.cache_seconds)

    def _ask_signature(self, lookup: Lookup, digest: str, in_ccr: bool | None) -> _Answer:
        """The signature verdict of `digest`: from the CCR's copy unless the CCR is known to lack the image, else
        (or if the copy carries no valid signature, say it was warmed before signatures travelled) from upstream."""
        assert lookup.verify is not None
        settings = self._config.resolver
        keys = public_keys(lookup.verify.keys)
        held: Verdict | None = None
        if in_ccr is not False:  # held, or nobody asked (copy: none): the CCR's copy counts when it has one
            try:
                held = check_signatures(
                    self._registries.ccr, self._ccr_repository(lookup), digest, keys, settings.lookup_timeout_seconds
                )
            except Exception:
                self._observe("error", self._config.ccr.registry)
            if held is not None and held.valid:
                return _Answer(held, None, self._clock() + settings.cache_seconds)
        try:
            client = self._registries.upstream(lookup.upstream.registry)
            verdict = check_signatures(client, lookup.source.repository, digest, keys, settings.lookup_timeout_seconds)
        except Exception as err:
            self._observe("error", lookup.upstream.registry)
            unread = Verdict(False, f"its signatures could not be read ({_describe(err)})")
            return _Answer(held or unread, None, self._clock() + self._error_seconds(err))
        ttl = settings.cache_seconds if verdict.valid else settings.negative_cache_seconds
        return _Answer(verdict, None, self._clock() + ttl)

    def _ccr_fallback(self, lookup: Lookup) -> tuple[str | None, Verdict | None]:
        """The digest the CCR's copy of the tag points at, and its signature verdict when the lookup needs one."""
        digest = self._ccr_tag_digest(lookup)
        if digest is None or lookup.verify is None:
            return digest, None
        return digest, self._shared(
            self._signature_key(lookup, digest), self._ask_signature, lookup, digest, True
        ).value

    def _ccr_tag_digest(self, lookup: Lookup) -> str | None:
        """The digest the CCR's copy of `lookup`'s tag points at, None when it has none (or cannot say)."""
        key = ("ccr-tag", self._ccr_repository(lookup), lookup.source.tag)
        digest: str | None = self._shared(key, self._ask_ccr_tag, lookup).value
        return digest

    def _ask_ccr_tag(self, lookup: Lookup) -> _Answer:
        settings = self._config.resolver
        try:
            digest = self._registries.ccr.resolve_digest(self._ccr_repository(lookup), lookup.source.tag or "latest")
        except Exception as err:
            self._observe("error", self._config.ccr.registry)
            return _Answer(None, _describe(err), self._clock() + settings.negative_cache_seconds)
        return _Answer(digest, None, self._clock() + settings.ccr_cache_seconds)

    def _ask_ccr(self, lookup: Lookup, digest: str) -> _Answer:
        settings = self._config.resolver
        repository = self._ccr_repository(lookup)
        try:
            held = self._registries.ccr.has_manifest(repository, digest, timeout=settings.lookup_timeout_seconds)
        except Exception as err:
            self._observe("error", self._config.ccr.registry)
            return _Answer(None, _describe(err), self._clock() + self._error_seconds(err))
        ttl = settings.ccr_cache_seconds if held else settings.negative_cache_seconds
        return _Answer(held, None, self._clock() + ttl)

    def _error_seconds(self, err: BaseException) -> float:
        """How long a failed lookup stands: negativeCacheSeconds, or the registry's Retry-After up to cacheSeconds."""
        settings = self._config.resolver
        retry_after = getattr(err, "retry_after", None) or 0.0
        return max(settings.negative_cache_seconds, min(retry_after, settings.cache_seconds))

    def _stuck(self, lookup: Lookup, timeout: float) -> ImageFacts | None:
        """Unknown facts at once when a lookup `lookup` needs has been in flight longer than a whole deadline.

        Some earlier request already waited its full deadline for it: waiting again would hold another
        server thread for nothing, so this request is answered now and the lookup goes on filling the cache.
        """
        keys = [(self._digest_key(lookup), lookup.upstream.registry)] if lookup.need_digest else []
        if lookup.need_ccr and lookup.source.digest is not None:
            keys.append((self._ccr_key(lookup, lookup.source.digest), self._config.ccr.registry))
        now = self._clock()
        for key, registry in keys:
            started = self._in_flight.get(key, (None, now))[1]
            if now - started > timeout:
                self._observe("error", registry)
                return ImageFacts(
                    resolve_error=f"the registry has not answered for {now - started:.0f} s", upstream_unavailable=True
                )
        return None

    def _timed_out(self, lookup: Lookup, timeout: float, future: Future[ImageFacts]) -> ImageFacts:
        """The facts for a lookup that did not finish in time: whatever is cached by now, the rest unknown."""
        if future.done():  # it raised: a bug, not a registry answer, unless its registry's queue was full
            error = future.exception()
            full = isinstance(error, BulkheadFull)  # its upstream is too slow to take more: cannot be asked
            prefix = "" if full else "internal error: "
            return ImageFacts(resolve_error=f"{prefix}{_describe(error)}", upstream_unavailable=full)
        cached = self._from_cache(lookup, count_hit=False)
        if cached is not None:
            return cached
        digest = self._cached(self._digest_key(lookup)) if lookup.need_digest else None
        if digest is not None and digest.value is not None:  # the tag resolved in time, only the CCR is silent
            return ImageFacts(digest=digest.value)
        return ImageFacts(
            resolve_error=f"no answer from the registries within {timeout:g} s", upstream_unavailable=True
        )

    # -- cache and sharing ---------------------------------------------------------------------------

    def _digest_key(self, lookup: Lookup) -> Hashable:
        return ("digest", lookup.upstream.registry, lookup.source.repository, lookup.source.tag)

    def _ccr_key(self, lookup: Lookup, digest: str) -> Hashable:
        return ("ccr", self._ccr_repository(lookup), digest)

    def _signature_key(self, lookup: Lookup, digest: str) -> Hashable:
        assert lookup.verify is not None
        return ("signature", lookup.upstream.registry, lookup.source.repository, digest, lookup.verify.keys)

    @staticmethod
    def _ccr_repository(lookup: Lookup) -> str:
        return f"{lookup.upstream.prefix}/{lookup.source.repository}"

    def _cached(self, key: Hashable) -> _Answer | None:
        answer = self._cache.get(key)
        if answer is None or answer.expires <= self._clock():
            return None
        return answer

    def _store(self, key: Hashable, answer: _Answer) -> None:
        with self._lock:
            self._cache[key] = answer
            if len(self._cache) > 65536:  # bounded: drop what has expired, then the oldest half
                now = self._clock()
                for stale in [k for k, a in self._cache.items() if a.expires <= now] or list(self._cache)[:32768]:
                    del self._cache[stale]

    def _shared(self, key: Hashable, ask: Callable[..., _Answer], *args: Any) -> _Answer:
        """The answer for `key`: cached, or from the one in-flight lookup, or from a new lookup."""
        with self._lock:
            answer = self._cached(key)
            if answer is not None:
                return answer
            future, _ = self._in_flight.get(key, (None, 0.0))
            owner = future is None
            if owner:
                future = Future()
                self._in_flight[key] = (future, self._clock())
        assert future is not None
        if not owner:
            return future.result()
        try:
            answer = ask(*args)
            self._store(key, answer)
            future.set_result(answer)
            return answer
        except BaseException as err:
            future.set_exception(err)
            raise
        finally:
            with self._lock:
                self._in_flight.pop(key, None)

    def _pool_submit(self, registry: str, fn: Callable[..., _T], *args: Any) -> Future[_T]:
        if self._pool is None:  # created on first use, so a forked gunicorn worker gets its own threads
            with self._lock:
                if self._pool is None:
                    settings = self._config.resolver
                    self._pool = Bulkhead(settings.max_concurrency, settings.max_concurrency_per_registry, "resolver")
        return self._pool.submit(registry, fn, *args)


def _upstream_unavailable(facts: ImageFacts | None) -> bool:
    """Whether the upstream has not said what the tag is, for want of an answer (None: not yet)."""
    return facts is None or (facts.digest is None and facts.upstream_unavailable)


def _describe(err: BaseException | None) -> str:
    """A one-line description of a lookup failure, for warnings and denial messages."""
    text = str(err) or type(err).__name__
    return text.splitlines()[0][:300]


def _facts(
    lookup: Lookup,
    digest: str | None,
    error: str | None,
    unavailable: bool,
    in_ccr: bool | None,
    missing: bool,
    signature: Verdict | None,
) -> ImageFacts:
    """The ImageFacts of `lookup` from its answers (cached or fresh); a digest only where the lookup asked for one."""
    return ImageFacts(
        digest=digest if lookup.need_digest else None,
        resolve_error=error,
        in_ccr=in_ccr,
        upstream_unavailable=unavailable,
        tag_missing=missing,
        signature=signature,
    )
