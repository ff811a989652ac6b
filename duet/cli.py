"""`duet` command line: one entry point, subcommands registered by the applications and duet_ros.

This is the composition root. Each module that offers commands (duet.apps.*, duet_ros.cli)
has `register(subparsers)`; the module list below is the only place commands are wired, and
names duet_ros by string only (the layer above; absent without ROS). A DuetError (something the user can fix)
ends in one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

from duet.errors import DuetError

# Modules that add subcommands, in help order. Each defines register(subparsers).
# The applications (duet.apps) first; duet_ros.cli, the layer above them, last: besides
# `duet up` and `duet security` it hands `duet sim` the runners that drive the ROS graph.
COMMAND_MODULES = (
    "duet.apps.demo",
    "duet.apps.hw",
    "duet.apps.data",
    "duet.apps.train",
    "duet.apps.eval",
    "duet.apps.sim",
    "duet_ros.cli",
)


def _available(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="duet", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks for user errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        if _available(name):
            importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        rc = args.func(args)
    except DuetError as e:
        if args.debug:
            raise
        print(f"duet {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"duet {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `duet ... | head`
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
