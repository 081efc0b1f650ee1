"""The daemon's one Claude client: key handling, accounting, budgets, rate limits, breaker.

Theory of operation
-------------------
One :class:`LLM` is created per daemon and shared by every run. Each
:meth:`LLM.create` call goes through, in order:

1. the **budget**: the call's input tokens are counted (the API's
   ``messages.count_tokens``, else a conservative local estimate) and its worst
   case must fit what is left of the run's phase and run limits
   (:class:`~._budget.Budget`) and of the daemon-wide daily limit (a
   :class:`~._budget.Ledger` held here, shared by all runs); ``max_tokens``
   shrinks to fit, and a call that cannot fit is not made →
   :class:`BudgetExhausted` (the arithmetic is :func:`._budget.plan_call`);
2. the **gate** (:class:`_Gate`): a shared *backoff* (after a 429/529 with
   ``retry-after``, *every* caller waits until that moment before its next
   request, instead of each one hammering the API), then the **circuit
   breaker** (after ``breaker_threshold`` consecutive 5xx/529/connection
   errors it opens: all calls pause for ``breaker_cooldown_s``; then one
   caller probes — half-open — and the others wait for its outcome), then an
   ``anyio.CapacityLimiter`` bounding calls in flight across all runs;
3. the SDK request itself. The SDK's own retries are off by default
   (``sdk_max_retries=0``): retries happen here, where every failure is seen by
   the gate, up to ``max_attempts`` requests per call → :class:`LLMUnavailable`.

A missing key, and a 401/403, raise :class:`LLMAuthError` at once, without
retries. The API key never appears in a log line, an exception message or a
repr: it is held in a :class:`_Secret` and handed only to the SDK.

Exceptions::

    LLMError                  base of what this module (and the Builder/Doctor) raise on purpose
    ├── LLMAuthError          key missing, or rejected (401/403): fail the run at once
    ├── BudgetExhausted       the next call does not fit a phase/run/daily budget (figures in ``refusal``)
    ├── LLMUnavailable        retries exhausted on 429/5xx/529/timeouts (an outage)
    ├── LLMRequestError       the API refused the request itself (400, 404, 413, ...)
    └── DoctorMalformed       the Doctor's answer did not fit its schema (raised by _doctor)

``import anthropic`` costs ~2 s, so it happens lazily in :meth:`LLM.create`;
importing this module is cheap.
"""

from __future__ import annotations

import json
import logging
import os
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import anyio
import msgspec

from ._budget import (
    Budget,
    Go,
    Ledger,
    Refuse,
    cost_pusd,
    day_start,
    estimate_input_tokens,
    plan_call,
    price_for,
    price_for_prompt,
    price_table,
    usd,
)
from ._errors import BudgetExhausted as BudgetExhausted
from ._errors import DoctorMalformed as DoctorMalformed
from ._errors import LLMAuthError as LLMAuthError
from ._errors import LLMError as LLMError
from ._errors import LLMRequestError as LLMRequestError
from ._errors import LLMUnavailable as LLMUnavailable

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from anthropic import AsyncAnthropic
    from anthropic.types import Message

LOGGER = logging.getLogger(__name__)

#: A current model that the installed SDK does not list as deprecated
#: (``anthropic._data.DEPRECATED_MODELS``); a test keeps this true.
DEFAULT_MODEL = "claude-sonnet-4-6"
CREDENTIAL_NAME = "anthropic_api_key"
_EPHEMERAL: dict[str, Any] = {"type": "ephemeral"}


# -- accounting ----------------------------------------------------------------------
class CallUsage(msgspec.Struct, frozen=True, kw_only=True):
    """Token usage of one Messages API call, as the API reported it, and its price."""

    model: str
    role: str  # "builder", "doctor", "normalizer", ...
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    cost_pusd: int = 0  # picodollars (10^-12 USD), each kind at its own price

    @property
    def total_tokens(self) -> int:
        """Every token the call processed: input, output, cache writes and cache reads."""
        return (self.input_tokens + self.output_tokens + self.cache_creation_input_tokens
                + self.cache_read_input_tokens)

    @property
    def cost_usd(self) -> float:
        return usd(self.cost_pusd)


def call_cost_usd(usage: CallUsage, prices: Mapping[str, Sequence[float]]) -> float | None:
    """USD cost of a call from a price table ``{model: [input, output, cache_write, cache_read]}``
    in USD per million tokens (no defaults); ``None`` when the model is not in the table."""
    table = price_table({k: v for k, v in prices.items() if len(v) == 4})
    price, known = price_for(usage.model, {k: table[k] for k in prices if k in table})
    if not known:
        return None
    return usd(_usage_pusd(usage, price))


def _usage_pusd(usage: CallUsage, price: Any) -> int:
    return cost_pusd(price, input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
                     cache_write=usage.cache_creation_input_tokens,
                     cache_read=usage.cache_read_input_tokens)


class RetryPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """How the Builder makes a retry whose failure the classifier named (hardened arm only).

    A retry is *named* when the classifier gave the previous failure a pattern and
    a hint (not the Doctor), *precise* when it also named a file and line (the
    Builder is then told to make the minimal edit with ``str_replace``). ``model``
    (empty: off) serves the retries selected by ``model_on`` (``"precise"`` or
    ``"named"``), priced and budgeted at its own row of the price table.
    """

    model: str = ""
    model_on: str = "precise"


# -- the key -------------------------------------------------------------------------
class _Secret:
    """Holds the API key; its repr and str never show it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "<secret>"

    __str__ = __repr__


def read_api_key(*, env: Mapping[str, str] | None = None,
                 api_key_file: str | None = None) -> _Secret | None:
    """Find the key: ``ANTHROPIC_API_KEY``, else ``api_key_file``, else
    ``$CREDENTIALS_DIRECTORY/anthropic_api_key`` (systemd ``LoadCredential=``).

    Returns ``None`` when none is set. An unreadable ``api_key_file`` is logged
    (path and reason only) and treated as absent.
    """
    env = os.environ if env is None else env
    value = (env.get("ANTHROPIC_API_KEY") or "").strip()
    if value:
        return _Secret(value)
    candidates = []
    if api_key_file:
        candidates.append(api_key_file)
    if env.get("CREDENTIALS_DIRECTORY"):
        candidates.append(os.path.join(env["CREDENTIALS_DIRECTORY"], CREDENTIAL_NAME))
    for path in candidates:
        try:
            value = Path(path).read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            continue
        except OSError as exc:
            LOGGER.warning("cannot read API key file %s: %s", path, exc.strerror)
            continue
        if value:
            return _Secret(value)
    return None


def has_api_key(*, env: Mapping[str, str] | None = None, api_key_file: str | None = None) -> bool:
    """Whether :func:`read_api_key` finds a key (the demo falls back to the scripted server if not)."""
    return read_api_key(env=env, api_key_file=api_key_file) is not None


# -- the gate: shared backoff + circuit breaker + concurrency --------------------------
BreakerState = Literal["closed", "open", "half_open"]


class LLMStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """A snapshot for health and metrics."""

    calls: int  # successful calls
    requests: int  # HTTP requests sent (attempts)
    rate_limited: int  # 429 and 529 answers
    failures: int  # 5xx/529/connection errors and timeouts
    auth_failures: int
    in_flight: int
    waiting: int
    breaker_state: BreakerState
    breaker_opens: int
    consecutive_failures: int
    backoff_remaining_s: float
    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int
    cache_read_input_tokens: int
    last_error: str | None
    cost_pusd: int = 0
    token_counts: int = 0  # inputs counted by the API's count_tokens
    token_estimates: int = 0  # inputs estimated locally (count_tokens failed)
    shrunk: int = 0  # calls whose max_tokens shrank to fit a budget
    refused: int = 0  # calls not made: no budget left


class _Gate:
    """Shared backoff, circuit breaker and concurrency limit (see the module docstring)."""

    def __init__(self, *, max_concurrency: int, threshold: int, cooldown_s: float) -> None:
        self.max_concurrency = max_concurrency
        self.threshold = threshold
        self.cooldown_s = cooldown_s
        self.state: BreakerState = "closed"
        self.consecutive_failures = 0
        self.opens = 0
        self.backoff_until = 0.0
        self.open_until = 0.0
        self.probe_in_flight = False
        self.waiting = 0
        self._limiter: anyio.CapacityLimiter | None = None
        self._changed: anyio.Event | None = None

    @property
    def limiter(self) -> anyio.CapacityLimiter:
        if self._limiter is None:  # created lazily: needs a running event loop
            self._limiter = anyio.CapacityLimiter(self.max_concurrency)
        return self._limiter

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    async def _wait_change(self, seconds: float) -> None:
        if self._changed is None:
            self._changed = anyio.Event()
        with anyio.move_on_after(seconds):
            await self._changed.wait()

    async def admit(self) -> bool:
        """Wait until a request may go out; ``True`` when this caller is the half-open probe."""
        self.waiting += 1
        try:
            while True:
                now = anyio.current_time()
                if now < self.backoff_until:
                    await self._wait_change(self.backoff_until - now)
                    continue
                if self.state == "open":
                    if now < self.open_until:
                        await self._wait_change(self.open_until - now)
                        continue
                    self.state = "half_open"
                    LOGGER.info("LLM circuit breaker half-open: probing")
                if self.state == "half_open":
                    if self.probe_in_flight:
                        await self._wait_change(self.cooldown_s)
                        continue
                    self.probe_in_flight = True
                    return True
                return False
        finally:
            self.waiting -= 1

    def backoff(self, seconds: float) -> None:
        """Every caller waits ``seconds`` from now before its next request."""
        self.backoff_until = max(self.backoff_until, anyio.current_time() + seconds)

    def succeeded(self, probe: bool) -> None:
        if probe:
            self.probe_in_flight = False
        if self.state != "closed":
            LOGGER.info("LLM circuit breaker closed")
        self.state = "closed"
        self.consecutive_failures = 0
        self._notify()

    def failed(self, probe: bool) -> None:
        """An outage-like failure (5xx, 529, connection error, timeout)."""
        if probe:
            self.probe_in_flight = False
        self.consecutive_failures += 1
        if self.state == "half_open" or (
                self.state == "closed" and self.consecutive_failures >= self.threshold):
            self.state = "open"
            self.opens += 1
            self.open_until = anyio.current_time() + self.cooldown_s
            LOGGER.warning("LLM circuit breaker open for %.1f s after %d consecutive failures",
                           self.cooldown_s, self.consecutive_failures)
        self._notify()

    def neutral(self, probe: bool) -> None:
        """The request ended without telling anything about the service's health."""
        if probe:
            self.probe_in_flight = False
            self._notify()


# -- the client ----------------------------------------------------------------------
class LLM:
    """The Claude client shared by all runs. Use as ``async with LLM(...) as llm:`` or call
    :meth:`aclose`.

    Parameters are plain values (the daemon passes its ``Settings``' fields):
    ``model``, ``max_tokens``, ``base_url`` (``None``: the SDK's default or
    ``ANTHROPIC_BASE_URL``), ``api_key`` (else :func:`read_api_key` with
    ``api_key_file`` and ``env``), ``max_concurrency`` (calls in flight, all
    runs), ``timeout_s`` per request, ``max_attempts`` requests per call,
    ``breaker_threshold`` / ``breaker_cooldown_s``, ``retry_base_s`` (backoff
    when the API gives no ``retry-after``), ``prices`` (overrides of the price
    table), ``daily_token_budget`` / ``daily_usd_budget`` (all runs, per UTC
    day; ``daily_spent(since)`` returns ``(tokens, pusd)`` already spent since
    that Unix time, asked once at the first call), ``min_output_tokens`` (a call
    whose ``max_tokens`` would have to shrink below this is refused instead),
    ``count_tokens`` (ask the API to count inputs; off: local estimate only).
    """

    def __init__(self, *, model: str = DEFAULT_MODEL, max_tokens: int = 8192,
                 base_url: str | None = None, api_key: str | None = None,
                 api_key_file: str | None = None, env: Mapping[str, str] | None = None,
                 max_concurrency: int = 4, timeout_s: float = 600.0, sdk_max_retries: int = 0,
                 max_attempts: int = 6, breaker_threshold: int = 5, breaker_cooldown_s: float = 30.0,
                 retry_base_s: float = 0.5, retry_max_s: float = 30.0,
                 prices: Mapping[str, Sequence[float]] | None = None,
                 daily_token_budget: int | None = None, daily_usd_budget: float | None = None,
                 daily_spent: Callable[[float], Awaitable[tuple[int, int]]] | None = None,
                 min_output_tokens: int = 256, count_tokens: bool = True,
                 clock: Callable[[], float] | None = None,
                 builder_retry: RetryPolicy | None = None) -> None:
        import time

        self.model = model
        self.builder_retry = builder_retry or RetryPolicy()
        self.prices = price_table(prices)
        self.min_output_tokens = min_output_tokens
        self.count_tokens = count_tokens
        self._clock = clock or time.time
        self._daily = Ledger("daily", tokens=daily_token_budget, usd_limit=daily_usd_budget,
                             day=day_start(self._clock()))
        self._daily_spent = daily_spent
        self._daily_loaded = daily_spent is None
        self.max_tokens = max_tokens
        self.base_url = base_url
        self.timeout_s = timeout_s
        self.sdk_max_retries = sdk_max_retries
        self.max_attempts = max(1, max_attempts)
        self.retry_base_s = retry_base_s
        self.retry_max_s = retry_max_s
        self._key = _Secret(api_key) if api_key else read_api_key(env=env, api_key_file=api_key_file)
        self._gate = _Gate(max_concurrency=max_concurrency, threshold=breaker_threshold,
                           cooldown_s=breaker_cooldown_s)
        self._client: AsyncAnthropic | None = None
        self._counts = {"calls": 0, "requests": 0, "rate_limited": 0, "failures": 0,
                        "auth_failures": 0}
        self._tokens = {"input_tokens": 0, "output_tokens": 0, "cache_creation_input_tokens": 0,
                        "cache_read_input_tokens": 0}
        self._budget_counts = {"cost_pusd": 0, "token_counts": 0, "token_estimates": 0,
                               "shrunk": 0, "refused": 0}
        self._last_error: str | None = None

    def __repr__(self) -> str:
        return (f"LLM(model={self.model!r}, base_url={self.base_url!r}, "
                f"key={'set' if self._key else 'missing'})")

    @property
    def has_key(self) -> bool:
        """Whether a key was found (calls fail with :class:`LLMAuthError` otherwise)."""
        return self._key is not None

    async def __aenter__(self) -> LLM:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP connection pool. Idempotent."""
        if self._client is not None:
            client, self._client = self._client, None
            with anyio.CancelScope(shield=True):
                await client.close()

    def _sdk(self) -> AsyncAnthropic:
        if self._client is None:
            import anthropic  # slow (~2 s): only when the first call is made

            assert self._key is not None
            deprecated = getattr(getattr(anthropic, "_data", None), "DEPRECATED_MODELS", {})
            if self.model in deprecated:
                LOGGER.warning("model %s is deprecated (end of life %s): set 'model' to a current "
                               "one, e.g. %s", self.model, deprecated[self.model], DEFAULT_MODEL)
            self._client = anthropic.AsyncAnthropic(
                api_key=self._key.reveal(), base_url=self.base_url,
                max_retries=self.sdk_max_retries, timeout=self.timeout_s)
        return self._client

    def statistics(self) -> LLMStatistics:
        """Counters, breaker state and token totals since start."""
        gate = self._gate
        in_flight = 0
        if gate._limiter is not None:
            in_flight = int(gate._limiter.borrowed_tokens)
        remaining = 0.0
        try:
            remaining = max(0.0, gate.backoff_until - anyio.current_time())
        except Exception:  # noqa: BLE001 (no event loop: statistics read from a thread)
            remaining = 0.0
        return LLMStatistics(
            **self._counts, in_flight=in_flight, waiting=gate.waiting,
            breaker_state=gate.state, breaker_opens=gate.opens,
            consecutive_failures=gate.consecutive_failures, backoff_remaining_s=remaining,
            **self._tokens, last_error=self._last_error, **self._budget_counts)

    def _retry_delay(self, attempt: int) -> float:
        delay = min(self.retry_base_s * (2 ** attempt), self.retry_max_s)
        return float(delay * (1 - 0.25 * random.random()))

    async def create(self, *, system: str | list[dict[str, Any]], messages: list[dict[str, Any]],
                     tools: Sequence[Mapping[str, Any]] = (), max_tokens: int | None = None,
                     role: str, run_id: str | None = None, budget: Budget | None = None,
                     tool_choice: Mapping[str, Any] | None = None,
                     cache_messages: bool = False,
                     extra: Mapping[str, Any] | None = None,
                     model: str | None = None) -> tuple[Message, CallUsage]:
        """One Messages API call with prompt caching, budgets, the shared gate and retries.

        ``system`` and ``tools`` form the stable, cached prefix;
        ``cache_messages=True`` also marks the last message (agent loops, so each
        turn reads the previous turns from the cache). Before the request, the
        call's worst case must fit ``budget`` (phase and run) and the daily
        budget; ``max_tokens`` shrinks to fit. ``extra`` adds request fields
        (e.g. ``context_management``); ``model`` replaces the client's model for this
        call (priced and budgeted at its own row). Returns the SDK ``Message`` and its
        :class:`CallUsage` (with its cost, already charged to ``budget``).

        Raises :class:`LLMAuthError` (no retries), :class:`BudgetExhausted` (no
        request made), :class:`LLMUnavailable`, :class:`LLMRequestError`.
        """
        if self._key is None:
            self._counts["auth_failures"] += 1
            raise LLMAuthError("no Anthropic API key: set ANTHROPIC_API_KEY or provide the "
                               f"'{CREDENTIAL_NAME}' credential file")
        params: dict[str, Any] = {
            "model": model or self.model,
            "max_tokens": max_tokens or self.max_tokens,
            "system": _cached_system(system),
            "messages": _cached_messages(messages) if cache_messages else list(messages),
        }
        if tools:
            # at most 4 breakpoints per request: the tools get one only if the system
            # prompt and messages leave room (a system breakpoint covers the tools too)
            params["tools"] = (_cached_tools(tools) if _breakpoints(params) < 4
                               else [dict(t) for t in tools])
        if tool_choice is not None:
            params["tool_choice"] = dict(tool_choice)
        if extra:
            params.update(extra)
        go = await self._plan(params, budget, run_id=run_id, role=role)
        key = self._daily.reserve(go.worst_tokens, go.worst_pusd) if go is not None else None
        if run_id:
            params["metadata"] = {"user_id": run_id}
        try:
            for attempt in range(self.max_attempts):
                message = await self._attempt(params, attempt, role=role, run_id=run_id)
                if message is None:
                    continue
                usage = _usage_of(message, role=role, model=str(params["model"]))
                price, _known = price_for_prompt(usage.model, self.prices, usage.input_tokens
                                                 + usage.cache_creation_input_tokens
                                                 + usage.cache_read_input_tokens)
                usage = msgspec.structs.replace(usage, cost_pusd=_usage_pusd(usage, price))
                self._counts["calls"] += 1
                for k in self._tokens:
                    self._tokens[k] += getattr(usage, k)
                self._budget_counts["cost_pusd"] += usage.cost_pusd
                if key is not None:
                    self._daily.settle(key, usage.total_tokens, usage.cost_pusd)
                    key = None
                if budget is not None:
                    budget.record(tokens=usage.total_tokens, pusd=usage.cost_pusd)
                return message, usage
        finally:
            if key is not None:
                self._daily.release(key)
        raise LLMUnavailable(f"Claude unavailable after {self.max_attempts} attempts: "
                             f"{self._last_error}")

    async def _plan(self, params: dict[str, Any], budget: Budget | None, *, run_id: str | None,
                    role: str) -> Go | None:
        """Count the input, check every limit, shrink ``params["max_tokens"]``.

        Returns the plan (``None`` when nothing limits this call). Raises :class:`BudgetExhausted`.
        """
        limits = budget.limits() if budget is not None else []
        if self._daily.tokens is not None or self._daily.usd is not None:
            await self._load_daily()
            self._daily.roll(self._clock())
            limits.append(self._daily.limit())
        if not limits:
            return None
        input_tokens = await self.count_input_tokens(params)
        price, known = price_for_prompt(params["model"], self.prices, input_tokens)
        if not known:
            LOGGER.warning("model %s is not in the price table: budgeted at the dearest price "
                           "(set 'prices' to add it)", params["model"])
        asked = int(params["max_tokens"])
        decision = plan_call(limits, price, input_tokens=input_tokens, max_tokens=asked,
                             min_output=self.min_output_tokens)
        if isinstance(decision, Refuse):
            self._budget_counts["refused"] += 1
            LOGGER.warning("run %s: %s call refused: %s", run_id, role, decision.message())
            raise BudgetExhausted.from_refusal(decision)
        if decision.shrunk:
            self._budget_counts["shrunk"] += 1
            LOGGER.info("run %s: %s call max_tokens shrunk from %d to %d to fit the budget",
                        run_id, role, asked, decision.max_tokens)
        params["max_tokens"] = decision.max_tokens
        return decision

    async def _load_daily(self) -> None:
        if self._daily_loaded or self._daily_spent is None:
            return
        self._daily_loaded = True  # once: later spending is settled here
        try:
            tokens, pusd = await self._daily_spent(self._daily.day)
        except Exception:  # noqa: BLE001 (an unreadable history must not stop calls; logged)
            LOGGER.warning("cannot read today's spending; the daily budget counts from now",
                           exc_info=True)
            return
        self._daily.spent_tokens += tokens
        self._daily.spent_pusd += pusd

    async def count_input_tokens(self, params: Mapping[str, Any]) -> int:
        """Input tokens of a request: the API's ``messages.count_tokens``, else (endpoint
        missing, error, timeout, counting off) :func:`._budget.estimate_input_tokens`."""
        fields = {k: params[k] for k in ("model", "system", "messages", "tools", "tool_choice")
                  if k in params}
        for _ in range(2 if self.count_tokens else 0):  # one retry: a dropped connection
            try:
                with anyio.fail_after(min(self.timeout_s, 30.0)):
                    counted = await self._sdk().messages.count_tokens(**fields)
                self._budget_counts["token_counts"] += 1
                return int(counted.input_tokens)
            except Exception as exc:  # noqa: BLE001 (any failure: estimate instead)
                LOGGER.info("count_tokens failed (%s: %s)", type(exc).__name__, exc)
                if getattr(exc, "status_code", None) is not None:
                    break  # the API answered: no point asking again
        self._budget_counts["token_estimates"] += 1
        size = len(json.dumps(fields, ensure_ascii=False, default=str).encode())
        return estimate_input_tokens(size)

    async def _attempt(self, params: dict[str, Any], attempt: int, *, role: str,
                       run_id: str | None) -> Message | None:
        """One request through the gate; ``None`` means 'retry'. Raises the non-retryable errors."""
        import anthropic

        gate = self._gate
        probe, outcome = False, "neutral"
        try:
            async with gate.limiter:
                # Admission is checked while holding a slot: a caller that queued for the
                # limiter before a 429 arrived must still honour the backoff it set.
                probe = await gate.admit()
                self._counts["requests"] += 1
                try:
                    message = await self._sdk().messages.create(**params)
                except (anthropic.AuthenticationError, anthropic.PermissionDeniedError) as exc:
                    self._counts["auth_failures"] += 1
                    self._last_error = f"HTTP {exc.status_code} {type(exc).__name__}"
                    raise LLMAuthError(f"Anthropic API rejected the key (HTTP {exc.status_code}); "
                                       "check ANTHROPIC_API_KEY / the credential file") from None
                except anthropic.APIStatusError as exc:
                    status = exc.status_code
                    retry_after = _retry_after(exc)
                    self._last_error = f"HTTP {status} {_error_type(exc)}"
                    if status == 429 or status == 529 or _error_type(exc) == "overloaded_error":
                        self._counts["rate_limited"] += 1
                        gate.backoff(retry_after if retry_after is not None
                                     else self._retry_delay(attempt))
                        if status != 429:
                            outcome = "failed"  # overload is an outage signal too
                    elif status >= 500 or status in (408, 409):
                        outcome = "failed"
                    else:
                        raise LLMRequestError(status, _error_message(exc)) from None
                except anthropic.APIConnectionError as exc:
                    self._last_error = type(exc).__name__
                    outcome = "failed"
                else:
                    outcome = "succeeded"
                    result: Message = message
                    return result
        finally:
            getattr(gate, outcome)(probe)
        if outcome == "failed":
            self._counts["failures"] += 1
            LOGGER.warning("run %s: %s call failed (%s), attempt %d of %d", run_id, role,
                           self._last_error, attempt + 1, self.max_attempts)
            if attempt + 1 < self.max_attempts:
                await anyio.sleep(self._retry_delay(attempt))
        else:
            LOGGER.info("run %s: %s call rate limited (%s), attempt %d of %d", run_id, role,
                        self._last_error, attempt + 1, self.max_attempts)
        return None


# -- helpers -------------------------------------------------------------------------
def _retry_after(exc: Any) -> float | None:
    headers = getattr(getattr(exc, "response", None), "headers", None)
    if headers is None:
        return None
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is not None:
            try:
                return max(0.0, float(value) / scale)
            except ValueError:
                continue
    return None


def _error_type(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and isinstance(err.get("type"), str):
            return str(err["type"])
    return type(exc).__name__


def _error_message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return f"{err.get('type')}: {err['message']}"[:500]
    return type(exc).__name__


def _usage_of(message: Any, *, role: str, model: str) -> CallUsage:
    usage = message.usage
    return CallUsage(
        model=getattr(message, "model", None) or model, role=role,
        input_tokens=int(usage.input_tokens or 0), output_tokens=int(usage.output_tokens or 0),
        cache_creation_input_tokens=int(getattr(usage, "cache_creation_input_tokens", 0) or 0),
        cache_read_input_tokens=int(getattr(usage, "cache_read_input_tokens", 0) or 0))


def _cached_system(system: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    """System blocks with a cache breakpoint on the last one (the stable prefix ends there)."""
    blocks: list[dict[str, Any]] = (
        [{"type": "text", "text": system}] if isinstance(system, str) else [dict(b) for b in system])
    if blocks:
        blocks[-1]["cache_control"] = _EPHEMERAL
    return blocks


def _breakpoints(params: Mapping[str, Any]) -> int:
    """Cache breakpoints already in a request's system prompt and messages."""
    blocks = list(params.get("system") or [])
    for m in params.get("messages") or []:
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, list):
            blocks += content
    return sum(1 for b in blocks if isinstance(b, dict) and "cache_control" in b)


def _cached_tools(tools: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    out = [dict(t) for t in tools]
    out[-1]["cache_control"] = _EPHEMERAL
    return out


def _cached_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Copy of ``messages`` with one cache breakpoint on the last block of the last message.

    Earlier breakpoints are not carried over, so a conversation never exceeds
    the API's four (tools, system, this one).
    """
    out = list(messages)
    if not out:
        return out
    last = dict(out[-1])
    content = last.get("content")
    blocks: Any = [{"type": "text", "text": content}] if isinstance(content, str) else content
    if isinstance(blocks, list) and blocks and isinstance(blocks[-1], dict):
        last["content"] = [*blocks[:-1], {**blocks[-1], "cache_control": _EPHEMERAL}]
    out[-1] = last
    return out


def tool_uses(message: Any, name: str | None = None) -> list[Any]:
    """The ``tool_use`` blocks of an answer (those of tool ``name`` when given)."""
    return [b for b in message.content if getattr(b, "type", None) == "tool_use"
            and (name is None or b.name == name)]


def message_blocks(message: Any) -> list[dict[str, Any]]:
    """The assistant message's content as plain dicts, ready to send back in ``messages``."""
    blocks: list[dict[str, Any]] = []
    for block in message.content:
        if block.type == "text":
            blocks.append({"type": "text", "text": block.text})
        elif block.type == "tool_use":
            blocks.append({"type": "tool_use", "id": block.id, "name": block.name,
                           "input": block.input})
        else:  # thinking, server tools, ...: send back what the API gave us
            blocks.append(block.model_dump(exclude_none=True, mode="json"))
    return blocks


# -- the normalizer's --llm (synchronous: autopackctl is a blocking program) -----------------
NORMALIZE_TOOL_NAME = "submit_run_spec"
NORMALIZE_SYSTEM = (
    "You convert a person's plan for a code change into an autopack run spec: the run's goal, "
    "constraints and non-goals, and small phases, each with a lower-case id, a concrete goal, "
    "the paths it may touch (scope globs) and the commands that check it. Keep the person's "
    "intent; invent nothing they did not ask for. Call submit_run_spec exactly once.")


def object_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """``schema`` with a top-level ``$ref`` inlined (tool input schemas must be objects)."""
    defs = dict(schema.get("$defs", {}))
    ref = str(schema.get("$ref", ""))
    top = dict(defs.get(ref.rsplit("/", 1)[-1], schema)) if ref else dict(schema)
    top.pop("$ref", None)
    if defs:
        top["$defs"] = defs
    return top


def normalize_request(plan_text: str, schema: Mapping[str, Any],
                      draft: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """System, messages, tools and tool_choice of a normalization call."""
    import json

    user = f"Normalize this plan into a run spec:\n\n{plan_text[:60_000]}"
    if draft:
        user += ("\n\nA deterministic normalizer produced this draft; keep what is right, fix "
                 f"what is not:\n{json.dumps(dict(draft), ensure_ascii=False)[:20_000]}")
    tool = {"name": NORMALIZE_TOOL_NAME,
            "description": "Submit the plan as an autopack run spec. Call exactly once.",
            "input_schema": object_schema(schema)}
    return {"system": NORMALIZE_SYSTEM, "messages": [{"role": "user", "content": user}],
            "tools": [tool], "tool_choice": {"type": "tool", "name": NORMALIZE_TOOL_NAME}}
