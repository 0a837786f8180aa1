"""``python -m devhost [--functions a,b] [--port 7071] [--settings local.settings.json]``.

Runs the app in the current directory (or ``--script-root``) until SIGINT or SIGTERM, then stops cleanly.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from devhost.appsettings import SettingError
from devhost.host import HostOptions, LocalHost
from devhost.hostconfig import HostConfigError
from devhost.index import IndexError_

__all__ = ["main"]

logger = logging.getLogger("devhost")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m devhost", description=__doc__)
    parser.add_argument("--functions", help="comma-separated function names to run (default: all)")
    parser.add_argument("--port", type=int, default=7071, help="HTTP port (0: any free port)")
    parser.add_argument("--host", default="127.0.0.1", help="HTTP bind address")
    parser.add_argument("--settings", type=Path, help="local settings file (default: local.settings.json)")
    parser.add_argument("--script-root", type=Path, default=Path.cwd(), help="folder with function_app.py")
    parser.add_argument("--grace", type=float, default=30.0, help="seconds to let running work finish on stop")
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the host until a signal; return the process exit code."""
    args = _parse(argv)
    logging.basicConfig(level=args.log_level.upper(), format="[%(asctime)s] %(levelname)s %(name)s: %(message)s")
    logging.getLogger("azure").setLevel(logging.WARNING)
    functions = [name.strip() for name in args.functions.split(",") if name.strip()] if args.functions else None
    options = HostOptions(
        script_root=args.script_root,
        settings_file=args.settings,
        functions=functions,
        host=args.host,
        port=args.port,
        grace_s=args.grace,
    )
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        logger.info("Received %s; stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    host = LocalHost(options)
    try:
        host.start()
    except (SettingError, HostConfigError, IndexError_) as exc:
        logger.error("Host failed to start: %s", exc)  # noqa: TRY400 - the message is the diagnosis
        return 2
    logger.info("Ready; press Ctrl-C to stop")
    stop.wait()
    host.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
