"""``python -m tests.kubeapi --port 0``: serve until SIGTERM or SIGINT.

The first stdout line is ``listening <port>``. Signal handlers only set a flag;
the main thread then stops the server (watches are cut, connections closed)
and exits 0.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from .server import KubeAPIServer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.kubeapi", description=__doc__)
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--bookmark-interval", type=float, default=3.0)
    parser.add_argument("--history-size", type=int, default=10000)
    parser.add_argument("--watch-timeout", type=float, default=None,
                        help="end watches without timeoutSeconds after this many seconds")
    parser.add_argument("--rv-wait", type=float, default=3.0)
    parser.add_argument("--strict-field-selectors", action="store_true")
    parser.add_argument("--apply", action="append", default=[], metavar="YAML",
                        help="apply this YAML file at start (repeatable), e.g. a CRD")
    args = parser.parse_args(argv)

    server = KubeAPIServer(bookmark_interval=args.bookmark_interval,
                           history_size=args.history_size, watch_timeout=args.watch_timeout,
                           rv_wait=args.rv_wait,
                           strict_field_selectors=args.strict_field_selectors)
    for path in args.apply:
        server.apply_yaml(path)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    server.start(args.port)
    print(f"listening {server.port}", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
