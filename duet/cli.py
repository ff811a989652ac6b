"""`duet` command line: one entry point, subcommands registered by each package.

Each package that offers commands has a module with `register(subparsers)`; the module
list below is the only place commands are wired. A DuetError (something the user can fix)
ends in one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

from duet.errors import DuetError

# Modules that add subcommands, in help order. Each defines register(subparsers).
COMMAND_MODULES = (
    "duet.demo",
    "duet.hardware.cli",
    "duet_ros.cli",
    "duet.data.cli",
    "duet.policy.cli",
    "duet.policy.eval_cli",
    "duet.hardware.sim.cli",
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
