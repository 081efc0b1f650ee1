"""The daemon's one Claude client: key handling, accounting, budgets, rate limits, breaker.

Theory of operation
-------------------
One :class:`LLM` is created per daemon and shared by every run. Each
:meth:`LLM.create` call goes through, in order:

1. the **budget** of the calling run (:class:`Budget`), checked before every
   request → :class:`BudgetExhausted`;
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
    ├── BudgetExhausted       the run's token/USD budget is spent (``reason`` names which)
    ├── LLMUnavailable        retries exhausted on 429/5xx/529/timeouts (an outage)
    ├── LLMRequestError       the API refused the request itself (400, 404, 413, ...)
    └── DoctorMalformed       the Doctor's answer did not fit its schema (raised by _doctor)

``import anthropic`` costs ~2 s, so it happens lazily in :meth:`LLM.create`;
importing this module is cheap.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import anyio
import msgspec

if TYPE_CHECKING:
    from anthropic import AsyncAnthropic
    from anthropic.types import Message

LOGGER = logging.getLogger(__name__)

#: A current model that the installed SDK does not list as deprecated
#: (``anthropic._data.DEPRECATED_MODELS``); a test keeps this true.
DEFAULT_MODEL = "claude-sonnet-4-6"
CREDENTIAL_NAME = "anthropic_api_key"
_EPHEMERAL: dict[str, Any] = {"type": "ephemeral"}


# -- exceptions ----------------------------------------------------------------------
class LLMError(Exception):
    """Base of the errors raised on purpose by the LLM client, the Builder and the Doctor."""


class LLMAuthError(LLMError):
    """Raised by :meth:`LLM.create` when no key is configured or the API rejects it (401/403)."""


class BudgetExhausted(LLMError):
    """Raised by :meth:`Budget.check` (so by :meth:`LLM.create`) before a call the budget cannot pay.

    ``reason`` is ``"token_budget"`` or ``"usd_budget"``.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class LLMUnavailable(LLMError):
    """Raised by :meth:`LLM.create` when every attempt failed with 429/5xx/529/connection errors."""


class LLMRequestError(LLMError):
    """Raised by :meth:`LLM.create` when the API refuses the request itself (e.g. 400); not retried."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


class DoctorMalformed(LLMError):
    """Raised by ``ask_doctor`` when the answer does not fit the decision schema.

    ``usage`` holds the call's accounting so the caller can still record the tokens.
    """

    def __init__(self, message: str, usage: CallUsage | None = None) -> None:
        super().__init__(message)
        self.usage = usage


# -- accounting ----------------------------------------------------------------------
class CallUsage(msgspec.Struct, frozen=True, kw_only=True):
    """Token usage of one Messages API call, as the API reported it."""

    model: str
    role: str  # "builder", "doctor", "normalizer", ...
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        """Every token the call processed: input, output, cache writes and cache reads."""
        return (self.input_tokens + self.output_tokens + self.cache_creation_input_tokens
                + self.cache_read_input_tokens)


def call_cost_usd(usage: CallUsage, prices: Mapping[str, Sequence[float]]) -> float | None:
    """USD cost of a call from a price table ``{model: [input, output, cache_write, cache_read]}``
    in USD per million tokens; ``None`` when the model is not in the table."""
    price = prices.get(usage.model)
    if price is None or len(price) < 4:
        return None
    return (usage.input_tokens * price[0] + usage.output_tokens * price[1]
            + usage.cache_creation_input_tokens * price[2]
            + usage.cache_read_input_tokens * price[3]) / 1_000_000


class Budget:
    """A run's spending limit, checked before each call and charged after it.

    ``token_limit`` counts :attr:`CallUsage.total_tokens`; ``usd_limit`` needs
    ``prices`` for the model (calls of unpriced models count 0 USD). Not
    thread-safe; one per run, used from that run's tasks.
    """

    def __init__(self, *, token_limit: int | None = None, usd_limit: float | None = None,
                 prices: Mapping[str, Sequence[float]] | None = None,
                 tokens_used: int = 0, usd_used: float = 0.0) -> None:
        self.token_limit = token_limit
        self.usd_limit = usd_limit
        self.prices = dict(prices or {})
        self.tokens_used = tokens_used
        self.usd_used = usd_used

    def check(self) -> None:
        """Raise :class:`BudgetExhausted` when nothing is left to spend."""
        if self.token_limit is not None and self.tokens_used >= self.token_limit:
            raise BudgetExhausted("token_budget",
                                  f"token budget exhausted: {self.tokens_used} of {self.token_limit}")
        if self.usd_limit is not None and self.usd_used >= self.usd_limit:
            raise BudgetExhausted("usd_budget",
                                  f"USD budget exhausted: {self.usd_used:.4f} of {self.usd_limit:.4f}")

    def record(self, usage: CallUsage) -> None:
        """Charge one call."""
        self.tokens_used += usage.total_tokens
        self.usd_used += call_cost_usd(usage, self.prices) or 0.0


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
    when the API gives no ``retry-after``).
    """

    def __init__(self, *, model: str = DEFAULT_MODEL, max_tokens: int = 8192,
                 base_url: str | None = None, api_key: str | None = None,
                 api_key_file: str | None = None, env: Mapping[str, str] | None = None,
                 max_concurrency: int = 4, timeout_s: float = 600.0, sdk_max_retries: int = 0,
                 max_attempts: int = 6, breaker_threshold: int = 5, breaker_cooldown_s: float = 30.0,
                 retry_base_s: float = 0.5, retry_max_s: float = 30.0) -> None:
        self.model = model
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
            **self._tokens, last_error=self._last_error)

    def _retry_delay(self, attempt: int) -> float:
        delay = min(self.retry_base_s * (2 ** attempt), self.retry_max_s)
        return float(delay * (1 - 0.25 * random.random()))

    async def create(self, *, system: str | list[dict[str, Any]], messages: list[dict[str, Any]],
                     tools: Sequence[Mapping[str, Any]] = (), max_tokens: int | None = None,
                     role: str, run_id: str | None = None, budget: Budget | None = None,
                     tool_choice: Mapping[str, Any] | None = None,
                     cache_messages: bool = False) -> tuple[Message, CallUsage]:
        """One Messages API call with prompt caching, the shared gate and retries.

        ``system`` and ``tools`` form the stable, cached prefix;
        ``cache_messages=True`` also marks the last message (agent loops, so each
        turn reads the previous turns from the cache). Returns the SDK
        ``Message`` and its :class:`CallUsage` (already charged to ``budget``).

        Raises :class:`LLMAuthError` (no retries), :class:`BudgetExhausted`,
        :class:`LLMUnavailable`, :class:`LLMRequestError`.
        """
        if self._key is None:
            self._counts["auth_failures"] += 1
            raise LLMAuthError("no Anthropic API key: set ANTHROPIC_API_KEY or provide the "
                               f"'{CREDENTIAL_NAME}' credential file")
        params: dict[str, Any] = {
            "model": self.model,
            "max_tokens": max_tokens or self.max_tokens,
            "system": _cached_system(system),
            "messages": _cached_messages(messages) if cache_messages else list(messages),
        }
        if tools:
            params["tools"] = _cached_tools(tools)
        if tool_choice is not None:
            params["tool_choice"] = dict(tool_choice)
        if run_id:
            params["metadata"] = {"user_id": run_id}
        for attempt in range(self.max_attempts):
            if budget is not None:
                budget.check()
            message = await self._attempt(params, attempt, role=role, run_id=run_id)
            if message is not None:
                usage = _usage_of(message, role=role, model=self.model)
                self._counts["calls"] += 1
                for key in self._tokens:
                    self._tokens[key] += getattr(usage, key)
                if budget is not None:
                    budget.record(usage)
                return message, usage
        raise LLMUnavailable(f"Claude unavailable after {self.max_attempts} attempts: "
                             f"{self._last_error}")

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
