"""``autopackd``: the daemon's command line."""

from __future__ import annotations

import argparse
import logging
import sys
import textwrap

from ._config import SETTING_DOCS, ConfigError, Settings, load_settings

LOGGER = logging.getLogger("autopack.daemon")


def _settings_help() -> str:
    defaults = Settings()
    lines = ["settings (config file key; environment AUTOPACK_<KEY>; flags override both):"]
    for key, doc in SETTING_DOCS.items():
        value = getattr(defaults, key)
        if key == "socket_mode":
            value = oct(value)
        lines.append(f"  {key} (default {value!r})")
        lines += textwrap.wrap(doc, 76, initial_indent="      ", subsequent_indent="      ")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autopackd",
        description="autopack supervisor daemon: runs submitted plans in isolated git worktrees.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_settings_help() + "\n\n" + EXIT_CODES,
    )
    parser.add_argument("--config", metavar="FILE", help="TOML settings file")
    parser.add_argument("--state-dir", help="override state_dir")
    parser.add_argument("--socket", help="override socket")
    parser.add_argument("--health-listen", metavar="HOST:PORT", help="override health_listen")
    parser.add_argument("--max-concurrent-runs", type=int, help="override max_concurrent_runs")
    parser.add_argument("--log-format", choices=["text", "json"], help="override log_format")
    parser.add_argument("--log-level", help="override log_level")
    parser.add_argument("--reset-store", action="store_true",
                        help="move a damaged database aside (autopack.db.damaged-<time>) and "
                             "exit; the next start begins with an empty one")
    parser.add_argument("--version", action="version", version="autopackd 0.1.0")
    return parser


EXIT_CODES = """exit status:
  0  stopped cleanly (SIGTERM/SIGINT), or --reset-store done
  1  gave up: actors kept crashing, or the store died (systemd restarts it)
  2  cannot start: bad settings, state dir in use by another daemon or not writable,
     busy health port or socket, damaged database; one line on stderr says which"""


def reset_store(settings: Settings) -> int:
    """``--reset-store``: with the state dir locked, move the database aside."""
    from pathlib import Path

    from ._integrity import move_aside
    from ._statedir import StateDirBusy, lock_state_dir

    state_dir = Path(settings.state_dir).resolve()
    if not state_dir.is_dir():
        print(f"autopackd: no state dir at {state_dir}; nothing to reset", file=sys.stderr)
        return 2
    try:
        lock = lock_state_dir(state_dir)
    except (StateDirBusy, OSError) as exc:
        print(f"autopackd: {exc}", file=sys.stderr)
        return 2
    try:
        moved = move_aside(state_dir / "autopack.db")
    except OSError as exc:
        print(f"autopackd: cannot move the database aside: {exc}", file=sys.stderr)
        return 2
    finally:
        lock.release()
    if not moved:
        print(f"autopackd: no database in {state_dir}; nothing to reset")
    else:
        print(f"autopackd: moved the database aside to {moved[0]}; the next start begins "
              "with an empty one")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    overrides = {
        "state_dir": args.state_dir, "socket": args.socket, "health_listen": args.health_listen,
        "max_concurrent_runs": args.max_concurrent_runs, "log_format": args.log_format,
        "log_level": args.log_level,
    }
    try:
        settings = load_settings(args.config, overrides=overrides)
    except ConfigError as exc:
        print(f"autopackd: {exc}", file=sys.stderr)
        return 2
    if args.reset_store:
        return reset_store(settings)
    from ._service import run_daemon

    return run_daemon(settings, config_file=args.config)


if __name__ == "__main__":
    sys.exit(main())
