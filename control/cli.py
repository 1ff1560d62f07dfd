"""The ``fluxgate`` command.

  fluxgate run --config PATH     serve the Kubernetes objects in PATH (file mode)
  fluxgate run --kubernetes      list and watch them on the Kubernetes API (read only)
  fluxgate controller            the control plane: leader writes status; admission webhook
  fluxgate demo                  run examples/quickstart.yaml with two echo backends
  fluxgate validate PATH         check the objects in PATH and print their conditions
  fluxgate version

Every setting is a flag and a FLUXGATE_* variable (see control/config.py);
``fluxgate run --help`` lists them with their defaults.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

import uvloop

from control import config as configmod
from control import validate as validatemod
from control.config import Config, ConfigError
from common import logfmt

VERSION = "0.1.0"
EXIT_CONFIG = 2
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
DEMO_BACKENDS = (("v1", 18081), ("v2", 18082))  # the EndpointSlices in quickstart.yaml


# The settings `fluxgate controller` reads (others are accepted and ignored).
CONTROLLER_SETTINGS = (
    "kubeconfig", "resync_seconds", "relist_seconds", "watch_namespaces", "admin_address", "admin_port",
    "ingress_http_port", "holdoff_ms", "holdoff_max_ms", "lease_namespace", "lease_duration",
    "lease_renew_deadline", "lease_retry_period", "pod_name", "webhook_address", "webhook_port",
    "webhook_cert", "webhook_key", "ingress_status_address", "log_level", "log_format",
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="fluxgate", description="FluxGate API gateway")
    sub = ap.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="serve a configuration (--config PATH, or --kubernetes)")
    configmod.add_flags(run)
    ctl = sub.add_parser(
        "controller", help="the control plane: write status (leader) and serve the admission webhook",
        description="List and watch every shard's objects on the Kubernetes API, translate them,\n"
        "write their status (the leader of the Lease fluxgate-controller only) and serve\n"
        "the validating admission webhook (when FLUXGATE_WEBHOOK_CERT/KEY are set).",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    configmod.add_flags(ctl, CONTROLLER_SETTINGS)
    demo = sub.add_parser("demo", help="run the quick start with two built-in echo backends")
    configmod.add_flags(demo, tuple(n for n in (s.name for s in configmod.SETTINGS) if n != "config"))
    sub.add_parser("version", help="print the version")
    check = sub.add_parser(
        "validate", help="check a configuration without serving it (for CI)",
        description="Load PATH as `fluxgate run --config PATH` would, translate it, and print\n"
        "every load error and warning and every object's conditions, one line each.\n"
        "Needs no cluster; starts no worker; touches no shared memory.",
        epilog=validatemod.HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument("path", metavar="PATH", help="a YAML file or a directory of them")
    check.add_argument("--output", choices=validatemod.OUTPUTS, default="text",
                       help="text (one line per condition) or json (one document); default text")
    check.add_argument("--quiet", "-q", action="store_true",
                       help="text output: print only the lines that make the exit code 1")
    args = ap.parse_args(argv)

    if args.command == "version":
        print(f"fluxgate {VERSION}")
        return 0
    if args.command == "validate":  # before Config.load: it reads no FLUXGATE_* setting
        return validatemod.run(args.path, args.output, args.quiet)
    flags = configmod.flags_from(args)
    if args.command == "demo":
        flags["config"] = str(EXAMPLES / "quickstart.yaml")
        # The demo is for one machine: loopback unless told otherwise.
        for name in ("bind_address", "admin_address"):
            if flags[name] is None and f"FLUXGATE_{name.upper()}" not in os.environ:
                flags[name] = "127.0.0.1"
    try:
        cfg = Config.load(flags)
    except ConfigError as exc:
        print(f"fluxgate: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "controller" and cfg.config:
        print("fluxgate: configuration error: FLUXGATE_CONFIG (--config) is for `fluxgate run`; "
              "the controller reads the Kubernetes API only", file=sys.stderr)
        return EXIT_CONFIG
    logfmt.setup("controller" if args.command == "controller" else "control", cfg.log_level,
                 cfg.log_format)
    if args.command == "controller":
        return _controller(cfg)
    if args.command == "demo":
        return _demo(cfg)
    return _run(cfg)


def _run(cfg: Config) -> int:
    from control.runner import Runner  # after logging is set up
    from shm.ring import RingError

    try:
        runner = Runner(cfg)
    except (ConfigError, RingError) as exc:
        print(f"fluxgate: cannot start: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    return uvloop.run(runner.run())


def _controller(cfg: Config) -> int:
    from control.controller import Controller  # after logging is set up

    try:
        controller = Controller(cfg)
    except ConfigError as exc:
        print(f"fluxgate: cannot start: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    return uvloop.run(controller.run())


def _demo(cfg: Config) -> int:
    procs = []
    try:
        for name, port in DEMO_BACKENDS:
            p = subprocess.Popen(
                [sys.executable, str(EXAMPLES / "echo.py"), "--port", str(port), "--name", name],
                stdout=subprocess.PIPE, text=True,
            )
            procs.append(p)
            line = p.stdout.readline()
            if not line.startswith("listening"):
                print(f"fluxgate demo: echo backend {name} could not listen on 127.0.0.1:{port} "
                      "(is the port in use?)", file=sys.stderr)
                return EXIT_CONFIG
        port = 8080
        print(
            "\nFluxGate demo: a 90/10 canary between echo backends v1 and v2.\n"
            "Try, in another terminal:\n"
            f"  curl -s http://127.0.0.1:{port}/ -H 'Host: demo.local'          # v1 nine times in ten\n"
            f"  for i in $(seq 20); do curl -s http://127.0.0.1:{port}/ -H 'Host: demo.local' "
            "| grep -o '\"backend\": \"v[12]\"'; done | sort | uniq -c\n"
            f"  curl -s http://127.0.0.1:{port}/v2 -H 'Host: demo.local'        # always v2\n"
            f"  curl -si http://127.0.0.1:{port}/nowhere -H 'Host: other.local'  # 404\n"
            f"  curl -s http://127.0.0.1:{cfg.admin_port}/debug/config          # the live table\n"
            "Edit examples/quickstart.yaml and the change is live within a second.\n"
            "Ctrl-C stops.\n",
            flush=True,
        )
        return _run(cfg)
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


if __name__ == "__main__":
    sys.exit(main())
