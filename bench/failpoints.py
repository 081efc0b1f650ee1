"""What an unarmed failpoint costs: ``hit()`` / ``await hit_async()`` with nothing armed,
next to their floors in the same run (a call of an empty function; an await of an empty
coroutine function) and to a dict lookup. Also a classifier request round trip through the
actor (the path ``classifier.classify`` sits on) with nothing armed, to show the share.

    .venv/bin/python bench/failpoints.py [--n 1000000] [--json]
"""

from __future__ import annotations

import argparse
import json
import timeit

import trio
from autopack.actors import _failpoints as fp


def _empty(name: str) -> None:
    return None


async def _aempty(name: str) -> None:
    return None


def _sync(n: int) -> dict[str, float]:
    d: dict[str, int] = {}
    out = {}
    for label, stmt in (("hit_unarmed", lambda: fp.hit("classifier.classify")),
                        ("floor_empty_call", lambda: _empty("classifier.classify")),
                        ("dict_get", lambda: d.get("classifier.classify"))):
        out[label] = min(timeit.repeat(stmt, number=n, repeat=5)) / n * 1e9
    return out


async def _async(n: int) -> dict[str, float]:
    out = {}
    for label, fn in (("hit_async_unarmed", fp.hit_async), ("floor_empty_await", _aempty)):
        best = float("inf")
        for _ in range(5):
            t0 = trio.current_time()
            for _ in range(n):
                await fn("classifier.classify")
            best = min(best, trio.current_time() - t0)
        out[label] = best / n * 1e9
    from autopack.actors.classifier import ClassifierActor

    actor = ClassifierActor()
    client = actor.client()
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.serve)
        m = 2000
        t0 = trio.current_time()
        for _ in range(m):
            await client.classify("ModuleNotFoundError: No module named 'yaml'\n", 1)
        out["classify_round_trip"] = (trio.current_time() - t0) / m * 1e9
        nursery.cancel_scope.cancel()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    fp.clear()
    res = _sync(args.n)
    res.update(trio.run(_async, args.n // 10))
    res["hit_vs_floor"] = res["hit_unarmed"] / res["floor_empty_call"]
    res["hit_async_vs_floor"] = res["hit_async_unarmed"] / res["floor_empty_await"]
    res["hit_async_share_of_classify"] = res["hit_async_unarmed"] / res["classify_round_trip"]
    if args.json:
        print(json.dumps(res))
        return
    print(f"hit() unarmed            {res['hit_unarmed']:7.1f} ns   (floor: empty call "
          f"{res['floor_empty_call']:.1f} ns, ratio {res['hit_vs_floor']:.2f}; dict.get "
          f"{res['dict_get']:.1f} ns)")
    print(f"await hit_async() unarmed {res['hit_async_unarmed']:6.1f} ns   (floor: empty await "
          f"{res['floor_empty_await']:.1f} ns, ratio {res['hit_async_vs_floor']:.2f})")
    print(f"classifier round trip    {res['classify_round_trip'] / 1000:7.1f} µs   "
          f"(the unarmed failpoint is {res['hit_async_share_of_classify']:.2%} of it)")


if __name__ == "__main__":
    main()
