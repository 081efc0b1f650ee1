"""Budget arithmetic: prices, the cost of a call, what is left, and whether a call may go.

Pure code: no I/O, no trio, no clock (the caller passes ``now``). The shells
(:mod:`._llm`, :mod:`._builder`, :mod:`._doctor`, the run actor) feed it
figures and obey its answer; the run engine can absorb it as it is.

Theory of operation
-------------------
Money is counted in integer **picodollars** (pUSD, 10⁻¹² USD): a price of
$0.30 per million tokens is exactly 300,000 pUSD per token, so sums are exact
and "never over the budget by a single token" can be checked with ``<=``.

A budget is a list of :class:`Limit` (one per *scope*: ``phase``, ``run``,
``daily``), each with an optional token limit and an optional USD limit and
what was already spent (plus what calls in flight have reserved). Before a
call, :func:`plan_call` takes its **worst case**: the counted input tokens, all
billed at the dearer of the input and cache-write prices, plus ``max_tokens`` of
output at the output price. If that fits every limit the call goes as asked;
otherwise ``max_tokens`` shrinks to the largest output that fits; if even
``min_output`` tokens do not fit, the call is refused (:class:`Refuse` names
the scope, the unit and the figures). After the call, the *actual* usage is
charged (:func:`cost_pusd`), which is never more than the worst case.

Price table
-----------
:data:`DEFAULT_PRICES`, USD per million tokens as ``(input, output, cache
write (5-minute TTL), cache read)``. Checked on 2026-12-02 against the stored
copy of Anthropic's pricing page (platform.claude.com/docs/en/about-claude/pricing,
"Model pricing") and the model overview pages (platform.claude.com/docs/.../models/
sonnet-5/overview, .../sonnet-5-5/overview, .../haiku-5-5/overview). Haiku 5.5 has
two bands: the row here is for prompts up to 100k tokens, :data:`LONG_PROMPT_PRICES`
for longer ones (:func:`price_for_prompt`; its input, output and cache-write prices
are on the overview page, its cache reads only in third-party lists). The Sonnet 5.5
cache read rests on second-hand sources (the overview page says $0.20; third-party
lists report a cut to $0.10 on 2026-10-07; we keep the official page's $0.20, the
conservative figure).
Override or extend it with the ``prices`` setting
(``model = [input, output, cache_write, cache_read]``).
A model in neither table is priced at the dearest row (:data:`FALLBACK_PRICE`)
so that a dollar budget still holds; :func:`price_for` says when it did that.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

import msgspec

from ._errors import PriceError as PriceError

PUSD_PER_USD = 10**12
_PUSD_PER_TOKEN_PER_MTOK = 10**6  # $1 per million tokens = 10^6 pUSD per token


class Price(msgspec.Struct, frozen=True):
    """USD per million tokens: input, output, cache write (5 min), cache read."""

    input: float
    output: float
    cache_write: float
    cache_read: float


PRICES_CHECKED = "2026-12-02"
DEFAULT_PRICES: dict[str, Price] = {
    "claude-fable-5-1": Price(10.0, 50.0, 12.5, 0.25),
    "claude-mythos-5-1": Price(10.0, 50.0, 12.5, 0.25),
    "claude-fable-5": Price(10.0, 50.0, 12.5, 1.0),
    "claude-mythos-5": Price(10.0, 50.0, 12.5, 1.0),
    "claude-opus-5-5": Price(4.0, 20.0, 5.0, 0.20),
    "claude-opus-5": Price(5.0, 25.0, 6.25, 0.50),
    "claude-opus-4-8": Price(5.0, 25.0, 6.25, 0.50),
    "claude-opus-4-7": Price(5.0, 25.0, 6.25, 0.50),
    "claude-opus-4-6": Price(5.0, 25.0, 6.25, 0.50),
    "claude-opus-4-5": Price(5.0, 25.0, 6.25, 0.50),
    "claude-opus-4-1": Price(15.0, 75.0, 18.75, 1.50),
    "claude-opus-4-0": Price(15.0, 75.0, 18.75, 1.50),
    "claude-opus-4": Price(15.0, 75.0, 18.75, 1.50),
    "claude-sonnet-5-5": Price(2.0, 10.0, 2.50, 0.20),  # cache read: see the docstring
    "claude-sonnet-5": Price(2.0, 10.0, 2.50, 0.20),
    "claude-sonnet-4-6": Price(3.0, 15.0, 3.75, 0.30),
    "claude-sonnet-4-5": Price(3.0, 15.0, 3.75, 0.30),
    "claude-sonnet-4-0": Price(3.0, 15.0, 3.75, 0.30),
    "claude-sonnet-4": Price(3.0, 15.0, 3.75, 0.30),
    "claude-3-7-sonnet": Price(3.0, 15.0, 3.75, 0.30),
    "claude-haiku-5-5": Price(0.10, 0.50, 0.125, 0.01),  # prompts <= 100k tokens: LONG_PROMPT_PRICES
    "claude-haiku-4-5": Price(1.0, 5.0, 1.25, 0.10),
    "claude-3-5-haiku": Price(0.80, 4.0, 1.0, 0.08),
    "claude-3-haiku": Price(0.25, 1.25, 0.30, 0.03),
}
#: Dearer rows for long prompts: model -> (prompt tokens above which it applies, price). Haiku
#: 5.5's overview page: input $0.50, output $2.50, 5-minute cache write $0.625 per million
#: tokens for prompts over 100,000 tokens (cache reads $0.05: third-party lists citing it).
LONG_PROMPT_PRICES: dict[str, tuple[int, Price]] = {
    "claude-haiku-5-5": (100_000, Price(0.50, 2.50, 0.625, 0.05)),
}
FALLBACK_PRICE = Price(15.0, 75.0, 18.75, 1.50)  # the dearest row: an unknown model cannot overshoot
_DATE_SUFFIX = re.compile(r"-(?:\d{8}|latest)$")


def price_table(overrides: Mapping[str, Sequence[float]] | None = None) -> dict[str, Price]:
    """The default table with ``overrides`` (``{model: [input, output, cache_write, cache_read]}``)."""
    table = dict(DEFAULT_PRICES)
    for model, values in (overrides or {}).items():
        if len(values) != 4 or any(not isinstance(v, int | float) or v < 0 for v in values):
            raise PriceError(f"prices.{model}: expected [input, output, cache_write, cache_read] "
                             "in USD per million tokens, all >= 0")
        table[model] = Price(*(float(v) for v in values))
    return table


def price_for(model: str, table: Mapping[str, Price]) -> tuple[Price, bool]:
    """``(price, known)``: the row of ``model`` (exact, then without a ``-YYYYMMDD`` /
    ``-latest`` suffix, then the longest row name it starts with), else
    ``(FALLBACK_PRICE, False)``."""
    if model in table:
        return table[model], True
    bare = _DATE_SUFFIX.sub("", model)
    if bare in table:
        return table[bare], True
    best = max((name for name in table if bare.startswith(name + "-")), key=len, default=None)
    if best is not None:
        return table[best], True
    return FALLBACK_PRICE, False


def price_for_prompt(model: str, table: Mapping[str, Price],
                     prompt_tokens: int) -> tuple[Price, bool]:
    """:func:`price_for`, with the model's long-prompt row (:data:`LONG_PROMPT_PRICES`) when
    the prompt (input, cache writes and cache reads) is longer than its threshold — unless
    the table's row for it is not the shipped one (an override is taken as it is)."""
    price, known = price_for(model, table)
    bare = _DATE_SUFFIX.sub("", model)
    name = next((n for n in LONG_PROMPT_PRICES if bare == n or bare.startswith(n + "-")), None)
    if name is not None and table.get(name) == DEFAULT_PRICES.get(name):
        threshold, long = LONG_PROMPT_PRICES[name]
        if prompt_tokens > threshold:
            return long, known
    return price, known


def per_token_pusd(usd_per_mtok: float) -> int:
    """pUSD per token of a price in USD per million tokens (exact for up to 6 decimals)."""
    return round(usd_per_mtok * _PUSD_PER_TOKEN_PER_MTOK)


def cost_pusd(price: Price, *, input_tokens: int = 0, output_tokens: int = 0,
              cache_write: int = 0, cache_read: int = 0) -> int:
    """What a call with this usage costs, in pUSD (each kind at its own price)."""
    return (input_tokens * per_token_pusd(price.input)
            + output_tokens * per_token_pusd(price.output)
            + cache_write * per_token_pusd(price.cache_write)
            + cache_read * per_token_pusd(price.cache_read))


def usd(pusd: int) -> float:
    """pUSD as USD (for display and JSON)."""
    return pusd / PUSD_PER_USD


def to_pusd(dollars: float) -> int:
    """USD as pUSD, rounded down (a limit never grows by rounding)."""
    return int(dollars * PUSD_PER_USD)


def worst_case(price: Price, *, input_tokens: int, max_tokens: int) -> tuple[int, int]:
    """``(tokens, pusd)`` a call may cost at most: every input token at the dearer of
    input and cache write, ``max_tokens`` of output."""
    dear_input = max(per_token_pusd(price.input), per_token_pusd(price.cache_write))
    return (input_tokens + max_tokens,
            input_tokens * dear_input + max_tokens * per_token_pusd(price.output))


# -- limits and the decision -------------------------------------------------------------
class Limit(msgspec.Struct, frozen=True, kw_only=True):
    """One scope's limit and what it has spent (``spent_*`` includes calls in flight)."""

    scope: str  # "phase", "run", "daily"
    tokens: int | None = None
    usd: float | None = None
    spent_tokens: int = 0
    spent_pusd: int = 0

    def left(self) -> tuple[int | None, int | None]:
        """``(tokens, pusd)`` left; ``None`` for an unlimited unit (may be negative)."""
        return (None if self.tokens is None else self.tokens - self.spent_tokens,
                None if self.usd is None else to_pusd(self.usd) - self.spent_pusd)


class Go(msgspec.Struct, frozen=True, kw_only=True):
    """The call may be made with ``max_tokens`` (``shrunk`` when less than asked)."""

    max_tokens: int
    shrunk: bool
    worst_tokens: int
    worst_pusd: int


class Refuse(msgspec.Struct, frozen=True, kw_only=True):
    """The call must not be made: even ``min_output`` tokens of output overshoot ``scope``."""

    scope: str
    unit: str  # "tokens" or "usd"
    limit: float
    spent: float
    needed: float  # the worst case with min_output tokens of output, in ``unit``
    input_tokens: int

    @property
    def reason(self) -> str:
        """``token_budget`` / ``usd_budget`` (the names the LLM client always used)."""
        return "token_budget" if self.unit == "tokens" else "usd_budget"

    def message(self) -> str:
        """One line with the figures, e.g. for the run's reason."""
        if self.unit == "tokens":
            figures = (f"{int(self.spent):,} of {int(self.limit):,} tokens spent, the next call "
                       f"needs up to {int(self.needed):,}")
        else:
            figures = (f"${self.spent:.4f} of ${self.limit:.4f} spent, the next call needs up to "
                       f"${self.needed:.4f}")
        return f"{self.scope} budget exhausted: {figures} ({self.input_tokens:,} input tokens)"


def plan_call(limits: Sequence[Limit], price: Price, *, input_tokens: int, max_tokens: int,
              min_output: int = 1) -> Go | Refuse:
    """Decide whether a call of ``input_tokens`` (counted) may go, and with what ``max_tokens``.

    ``max_tokens`` shrinks to the largest output every limit still allows; a
    call that cannot get ``min_output`` tokens of output is refused, naming the
    first limit (in ``limits`` order) that binds.
    """
    min_output = max(1, min(min_output, max_tokens))
    dear_input = max(per_token_pusd(price.input), per_token_pusd(price.cache_write))
    out_price = per_token_pusd(price.output)
    allowed = max_tokens
    for limit in limits:
        tokens_left, pusd_left = limit.left()
        if tokens_left is not None:
            room = tokens_left - input_tokens
            if room < min_output:
                return _refuse(limit, "tokens", input_tokens, min_output, price)
            allowed = min(allowed, room)
        if pusd_left is not None:
            room_pusd = pusd_left - input_tokens * dear_input
            room = room_pusd // out_price if out_price else (max_tokens if room_pusd >= 0 else -1)
            if room < min_output:
                return _refuse(limit, "usd", input_tokens, min_output, price)
            allowed = min(allowed, room)
    tokens, pusd = worst_case(price, input_tokens=input_tokens, max_tokens=allowed)
    return Go(max_tokens=allowed, shrunk=allowed < max_tokens, worst_tokens=tokens, worst_pusd=pusd)


def _refuse(limit: Limit, unit: str, input_tokens: int, min_output: int, price: Price) -> Refuse:
    tokens, pusd = worst_case(price, input_tokens=input_tokens, max_tokens=min_output)
    if unit == "tokens":
        assert limit.tokens is not None
        return Refuse(scope=limit.scope, unit=unit, limit=limit.tokens, spent=limit.spent_tokens,
                      needed=tokens, input_tokens=input_tokens)
    assert limit.usd is not None
    return Refuse(scope=limit.scope, unit=unit, limit=limit.usd, spent=usd(limit.spent_pusd),
                  needed=usd(pusd), input_tokens=input_tokens)


# -- the daemon-wide day -------------------------------------------------------------------
def day_start(now: float) -> float:
    """Unix time of the UTC midnight that began the day of ``now`` (daily budgets reset then)."""
    dt = datetime.fromtimestamp(now, UTC)
    return datetime(dt.year, dt.month, dt.day, tzinfo=UTC).timestamp()


class Ledger:
    """Spending of one scope with reservations for calls in flight (the daily budget).

    ``reserve`` before a call (the worst case), ``settle`` after it (the
    reservation is replaced by the actual figures), ``release`` when the call
    failed without cost. :meth:`roll` starts a new day. Not thread-safe: used
    from one event loop.
    """

    def __init__(self, scope: str, *, tokens: int | None, usd_limit: float | None,
                 day: float, spent_tokens: int = 0, spent_pusd: int = 0) -> None:
        self.scope = scope
        self.tokens = tokens
        self.usd = usd_limit
        self.day = day
        self.spent_tokens = spent_tokens
        self.spent_pusd = spent_pusd
        self._reserved: dict[int, tuple[int, int]] = {}
        self._next = 0

    def roll(self, now: float) -> None:
        """Forget the spending of earlier days (reservations in flight stay)."""
        day = day_start(now)
        if day != self.day:
            self.day, self.spent_tokens, self.spent_pusd = day, 0, 0

    def limit(self) -> Limit:
        """The limit as :func:`plan_call` takes it, reservations counted as spent."""
        r_tokens = sum(t for t, _ in self._reserved.values())
        r_pusd = sum(p for _, p in self._reserved.values())
        return Limit(scope=self.scope, tokens=self.tokens, usd=self.usd,
                     spent_tokens=self.spent_tokens + r_tokens, spent_pusd=self.spent_pusd + r_pusd)

    def reserve(self, tokens: int, pusd: int) -> int:
        """Hold a call's worst case; returns the key for :meth:`settle` / :meth:`release`."""
        self._next += 1
        self._reserved[self._next] = (tokens, pusd)
        return self._next

    def settle(self, key: int, tokens: int, pusd: int) -> None:
        """Replace a reservation by what the call actually cost."""
        self._reserved.pop(key, None)
        self.spent_tokens += tokens
        self.spent_pusd += pusd

    def release(self, key: int) -> None:
        """Drop a reservation (the call cost nothing)."""
        self._reserved.pop(key, None)


class Budget:
    """The limits of one run while it makes calls: its ``run`` scope and, optionally, the
    current phase's, with the price table that turns usage into dollars.

    Built by the run actor before each Builder attempt or Doctor call from what
    the database says was spent; charged after each call with :meth:`record`.
    A run makes one call at a time, so no reservations are needed here (the
    daily scope, shared by all runs, is a :class:`Ledger`).
    """

    def __init__(self, *, token_limit: int | None = None, usd_limit: float | None = None,
                 prices: Mapping[str, Sequence[float]] | Mapping[str, Price] | None = None,
                 tokens_used: int = 0, pusd_used: int = 0,
                 phase_token_limit: int | None = None, phase_usd_limit: float | None = None,
                 phase_tokens_used: int = 0, phase_pusd_used: int = 0) -> None:
        self.table = _as_table(prices)
        self.run = Limit(scope="run", tokens=token_limit, usd=usd_limit,
                         spent_tokens=tokens_used, spent_pusd=pusd_used)
        self.phase = Limit(scope="phase", tokens=phase_token_limit, usd=phase_usd_limit,
                           spent_tokens=phase_tokens_used, spent_pusd=phase_pusd_used)

    @property
    def tokens_used(self) -> int:
        """Tokens the run has spent (every kind)."""
        return self.run.spent_tokens

    @property
    def usd_used(self) -> float:
        """Dollars the run has spent."""
        return usd(self.run.spent_pusd)

    def limits(self) -> list[Limit]:
        """The scopes that limit something, narrowest first."""
        return [lim for lim in (self.phase, self.run) if lim.tokens is not None or lim.usd is not None]

    def price(self, model: str) -> Price:
        """The price of ``model`` (the fallback row when unknown)."""
        return price_for(model, self.table)[0]

    def record(self, *, tokens: int, pusd: int) -> None:
        """Charge one call to the phase and the run."""
        self.run = msgspec.structs.replace(self.run, spent_tokens=self.run.spent_tokens + tokens,
                                           spent_pusd=self.run.spent_pusd + pusd)
        self.phase = msgspec.structs.replace(self.phase, spent_tokens=self.phase.spent_tokens + tokens,
                                             spent_pusd=self.phase.spent_pusd + pusd)


def _as_table(prices: Mapping[str, Sequence[float]] | Mapping[str, Price] | None) -> dict[str, Price]:
    given: dict[str, Price] = {}  # rows already priced (a table passed on)
    overrides: dict[str, Sequence[float]] = {}  # the settings' [input, output, write, read]
    for model, value in (prices or {}).items():
        if isinstance(value, Price):
            given[model] = value
        else:
            overrides[model] = value
    if given and not overrides:
        return given
    return {**price_table(overrides), **given}


def estimate_input_tokens(request_bytes: int) -> int:
    """A conservative local count of a request's input tokens when the API cannot count:
    one token per byte of its JSON (Claude's tokens average 3-4 characters, never
    under one byte) plus 1,024 for the tool-use system prompt the API adds."""
    return request_bytes + 1024
