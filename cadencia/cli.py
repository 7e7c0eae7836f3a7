"""The `cadencia` console script: discovers subcommands and turns failures into one-line errors."""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
import traceback
from types import ModuleType
from typing import NoReturn

import cadencia.commands as commands_pkg
from cadencia import __version__


class UserError(ValueError):
    """A problem with the user's input or environment, reported as one line (exit 2)."""


def _command_modules() -> list[ModuleType]:
    mods = []
    for info in pkgutil.iter_modules(commands_pkg.__path__):
        if info.name.startswith("_"):
            continue
        mods.append(importlib.import_module(f"{commands_pkg.__name__}.{info.name}"))
    return sorted(mods, key=lambda m: m.NAME)


# Errors are printed on one line, this long at most: an argument may be megabytes of text.
MAX_ERROR_CHARS = 400
# Failures to open a path the user named: their input, not the machine's (exit 2).
PATH_ERRORS = (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)


def one_line(message: str, limit: int = MAX_ERROR_CHARS) -> str:
    """`message` on one line (newlines and runs of blanks folded), cut at `limit` chars."""
    flat = " ".join(message.split())
    return flat if len(flat) <= limit else f"{flat[:limit]}... ({len(flat)} chars)"


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors on one line (subcommand parsers inherit this class)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="cadencia",
        description="cadencIA Accordion World: the supercomputer you already own.",
    )
    parser.add_argument("--version", action="version", version=f"cadencia {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for mod in _command_modules():
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=getattr(mod, "DESCRIPTION", mod.HELP))
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("cadencia: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except (ValueError, OSError, RuntimeError) as exc:
        # Domain errors subclass ValueError; show one line, the traceback only on request.
        if os.environ.get("CADENCIA_DEBUG"):
            traceback.print_exc()
        msg = one_line(str(exc) or type(exc).__name__)
        print(f"cadencia {args.command}: error: {msg}", file=sys.stderr)
        return 2 if isinstance(exc, (ValueError, *PATH_ERRORS)) else 1
    except Exception as exc:  # noqa: BLE001 - a bug: still one line; the traceback on request
        if os.environ.get("CADENCIA_DEBUG"):
            traceback.print_exc()
        print(f"cadencia {args.command}: internal error: {type(exc).__name__}: "
              f"{one_line(str(exc))} (CADENCIA_DEBUG=1 shows where)", file=sys.stderr)
        return 1
