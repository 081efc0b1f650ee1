"""Budget arithmetic (``actors/_budget.py``): pure, tested with tables of cases."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from autopack.actors._budget import (
    DEFAULT_PRICES,
    FALLBACK_PRICE,
    PRICES_CHECKED,
    Budget,
    Go,
    Ledger,
    Limit,
    Price,
    PriceError,
    Refuse,
    cost_pusd,
    day_start,
    estimate_input_tokens,
    plan_call,
    price_for,
    price_for_prompt,
    price_table,
    usd,
    worst_case,
)

SONNET = Price(3.0, 15.0, 3.75, 0.30)  # pUSD per token: 3e6, 15e6, 3.75e6, 3e5
M = 10**6  # pUSD per token of $1 per Mtok


def test_table_has_current_models_with_four_prices() -> None:
    assert PRICES_CHECKED >= "2026-12-01"
    assert DEFAULT_PRICES["claude-sonnet-4-6"] == SONNET
    for name, p in DEFAULT_PRICES.items():
        assert name.startswith("claude-")
        # cache reads are cheaper than input, cache writes dearer, output dearest
        assert p.cache_read < p.input < p.cache_write < p.output, name
    assert all(p.input <= FALLBACK_PRICE.input and p.output <= FALLBACK_PRICE.output
               for p in DEFAULT_PRICES.values())


@pytest.mark.parametrize(
    ("model", "expected", "known"),
    [
        pytest.param("claude-sonnet-4-6", SONNET, True, id="exact"),
        pytest.param("claude-sonnet-4-5-20250929", SONNET, True, id="dated"),
        pytest.param("claude-haiku-4-5-latest", DEFAULT_PRICES["claude-haiku-4-5"], True, id="latest"),
        pytest.param("claude-opus-4-1-20250805", DEFAULT_PRICES["claude-opus-4-1"], True, id="opus-old"),
        pytest.param("claude-sonnet-5-5", DEFAULT_PRICES["claude-sonnet-5-5"], True,
                     id="longest-name-wins-over-sonnet-5"),
        pytest.param("gpt-9", FALLBACK_PRICE, False, id="unknown-dearest"),
    ],
)
def test_price_for(model: str, expected: Price, known: bool) -> None:
    assert price_for(model, DEFAULT_PRICES) == (expected, known)


def test_overrides_replace_and_extend_and_are_checked() -> None:
    table = price_table({"claude-sonnet-4-6": [1, 2, 3, 0.5], "my-model": [0.1, 0.2, 0.3, 0.01]})
    assert table["claude-sonnet-4-6"] == Price(1.0, 2.0, 3.0, 0.5)
    assert price_for("my-model", table) == (Price(0.1, 0.2, 0.3, 0.01), True)
    assert table["claude-opus-4-6"] == DEFAULT_PRICES["claude-opus-4-6"]  # the rest stays
    with pytest.raises(PriceError, match="prices.bad"):
        price_table({"bad": [1, 2, 3]})
    with pytest.raises(PriceError):
        price_table({"bad": [1, 2, 3, -1]})


@pytest.mark.parametrize(
    ("usage", "pusd"),
    [
        pytest.param({"input_tokens": 1}, 3 * M, id="input"),
        pytest.param({"output_tokens": 1}, 15 * M, id="output"),
        pytest.param({"cache_write": 1}, 3_750_000, id="cache-write"),
        pytest.param({"cache_read": 1}, 300_000, id="cache-read-a-tenth"),
        pytest.param({"input_tokens": 1000, "output_tokens": 100, "cache_write": 2000,
                      "cache_read": 10_000}, 3000 * M + 1500 * M + 7500 * M + 3000 * M, id="mixed"),
    ],
)
def test_cost_each_kind_at_its_price(usage: dict[str, int], pusd: int) -> None:
    assert cost_pusd(SONNET, **usage) == pusd


def test_worst_case_bills_input_as_cache_write() -> None:
    assert worst_case(SONNET, input_tokens=1000, max_tokens=100) == (1100, 1000 * 3_750_000 + 100 * 15 * M)


def lim(scope: str = "run", **kw: object) -> Limit:
    return Limit(scope=scope, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("limits", "input_tokens", "max_tokens", "min_output", "expected"),
    [
        pytest.param([], 5000, 8192, 1, Go(max_tokens=8192, shrunk=False, worst_tokens=13192,
                                           worst_pusd=5000 * 3_750_000 + 8192 * 15 * M),
                     id="no-limits"),
        pytest.param([lim(tokens=20_000, spent_tokens=5_000)], 5000, 8192, 1, 8192, id="fits"),
        pytest.param([lim(tokens=20_000, spent_tokens=10_000)], 5000, 8192, 1, 5000,
                     id="tokens-shrink-to-exactly-the-rest"),
        pytest.param([lim(tokens=20_000, spent_tokens=10_000)], 5000, 8192, 5000, 5000,
                     id="shrink-to-min-output-still-goes"),
        pytest.param([lim(tokens=20_000, spent_tokens=10_000)], 5000, 8192, 5001,
                     ("run", "tokens"), id="below-min-output-refused"),
        pytest.param([lim(tokens=20_000, spent_tokens=16_000)], 5000, 8192, 1,
                     ("run", "tokens"), id="input-alone-too-big"),
        # $0.10 left: input 1000 at $3.75/Mtok = $0.00375; output at $15/Mtok: 6416 tokens
        pytest.param([lim(usd=0.5, spent_pusd=400_000_000_000)], 1000, 8192, 1, 6416,
                     id="usd-shrink"),
        pytest.param([lim(usd=0.5, spent_pusd=500_000_000_000)], 1, 8192, 1, ("run", "usd"),
                     id="usd-spent"),
        pytest.param([lim("phase", tokens=9000), lim("run", tokens=100_000),
                      lim("daily", usd=100.0)], 5000, 8192, 1, 4000, id="narrowest-scope-wins"),
        pytest.param([lim("phase", tokens=100_000), lim("run", tokens=100_000, spent_tokens=99_000),
                      lim("daily", usd=100.0)], 5000, 8192, 1, ("run", "tokens"),
                     id="refusal-names-the-run"),
        pytest.param([lim("phase"), lim("daily", usd=0.02, spent_pusd=10**10)], 1000, 8192, 1, 416,
                     id="daily-usd"),
    ],
)
def test_plan_call(limits: list[Limit], input_tokens: int, max_tokens: int, min_output: int,
                   expected: object) -> None:
    got = plan_call(limits, SONNET, input_tokens=input_tokens, max_tokens=max_tokens,
                    min_output=min_output)
    if isinstance(expected, Go):
        assert got == expected
    elif isinstance(expected, int):
        assert isinstance(got, Go)
        assert got.max_tokens == expected
        assert got.shrunk == (expected < max_tokens)
        # the plan fits every limit, to the token and the picodollar
        for limit in limits:
            if limit.tokens is not None:
                assert limit.spent_tokens + got.worst_tokens <= limit.tokens
            if limit.usd is not None:
                assert limit.spent_pusd + got.worst_pusd <= int(limit.usd * 10**12)
    else:
        assert isinstance(got, Refuse)
        assert (got.scope, got.unit) == expected
        assert got.reason in ("token_budget", "usd_budget")
        assert got.scope in got.message()


def test_refusal_message_has_the_figures() -> None:
    got = plan_call([lim(usd=0.05, spent_pusd=49 * 10**9)], SONNET, input_tokens=2000,
                    max_tokens=8192, min_output=256)
    assert isinstance(got, Refuse)
    assert got.message() == ("run budget exhausted: $0.0490 of $0.0500 spent, the next call needs "
                             "up to $0.0113 (2,000 input tokens)")


def test_free_output_price_does_not_divide_by_zero() -> None:
    free = Price(1.0, 0.0, 1.0, 0.1)
    got = plan_call([lim(usd=1.0)], free, input_tokens=10, max_tokens=100)
    assert isinstance(got, Go)
    assert got.max_tokens == 100
    assert isinstance(plan_call([lim(usd=1e-9)], free, input_tokens=10, max_tokens=100), Refuse)


@pytest.mark.parametrize(
    ("when", "midnight"),
    [
        pytest.param(datetime(2026, 12, 2, 3, 4, 5, tzinfo=UTC), datetime(2026, 12, 2, tzinfo=UTC), id="night"),
        pytest.param(datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC), datetime(2026, 12, 31, tzinfo=UTC),
                     id="last-second"),
        pytest.param(datetime(2027, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC), id="midnight"),
    ],
)
def test_day_start_is_utc_midnight(when: datetime, midnight: datetime) -> None:
    assert day_start(when.timestamp()) == midnight.timestamp()


def test_ledger_reservations_and_day_roll() -> None:
    t0 = datetime(2026, 12, 2, 23, 0, tzinfo=UTC).timestamp()
    ledger = Ledger("daily", tokens=10_000, usd_limit=None, day=day_start(t0), spent_tokens=1000)
    a = ledger.reserve(4000, 0)
    b = ledger.reserve(3000, 0)
    assert ledger.limit().spent_tokens == 8000  # calls in flight count
    ledger.settle(a, 2500, 7)
    ledger.release(b)
    assert (ledger.spent_tokens, ledger.spent_pusd, ledger.limit().spent_tokens) == (3500, 7, 3500)
    ledger.roll(t0 + 1800)  # same day
    assert ledger.spent_tokens == 3500
    c = ledger.reserve(100, 0)
    ledger.roll(t0 + 3600)  # next UTC day: spending forgotten, the call in flight not
    assert (ledger.spent_tokens, ledger.limit().spent_tokens) == (0, 100)
    ledger.settle(c, 90, 0)
    assert ledger.spent_tokens == 90


def test_run_budget_records_into_both_scopes() -> None:
    b = Budget(token_limit=1000, usd_limit=1.0, phase_token_limit=500, tokens_used=100,
               pusd_used=10, phase_tokens_used=50)
    assert [x.scope for x in b.limits()] == ["phase", "run"]
    b.record(tokens=200, pusd=5)
    assert (b.run.spent_tokens, b.phase.spent_tokens, b.run.spent_pusd) == (300, 250, 15)
    assert b.tokens_used == 300
    assert usd(b.run.spent_pusd) == b.usd_used
    assert Budget().limits() == []
    assert Budget(prices={"x": [1, 2, 3, 4]}).price("x") == Price(1.0, 2.0, 3.0, 4.0)


def test_local_estimate_is_never_below_a_byte_count() -> None:
    assert estimate_input_tokens(0) == 1024
    assert estimate_input_tokens(40_000) >= 40_000


HAIKU_55 = DEFAULT_PRICES["claude-haiku-5-5"]
HAIKU_55_LONG = Price(0.50, 2.50, 0.625, 0.05)


@pytest.mark.parametrize(
    ("model", "prompt", "overrides", "expected"),
    [
        pytest.param("claude-haiku-5-5", 100_000, None, HAIKU_55, id="haiku-5-5-up-to-100k"),
        pytest.param("claude-haiku-5-5", 100_001, None, HAIKU_55_LONG, id="haiku-5-5-over-100k"),
        pytest.param("claude-haiku-5-5-20261007", 250_000, None, HAIKU_55_LONG, id="dated-id"),
        pytest.param("claude-haiku-5-5", 250_000, {"claude-haiku-5-5": [1, 2, 3, 4]},
                     Price(1, 2, 3, 4), id="an-override-is-taken-as-it-is"),
        pytest.param("claude-sonnet-4-6", 250_000, None, SONNET, id="no-long-row"),
    ],
)
def test_long_prompts_of_haiku_5_5_are_priced_at_the_long_row(
        model: str, prompt: int, overrides: dict[str, list[float]] | None, expected: Price) -> None:
    price, known = price_for_prompt(model, price_table(overrides), prompt)
    assert known
    assert price == expected
