"""One-line errors for the command-line scripts.

A user's mistake (a bad file, a bad value, a path that cannot be written) ends a script with
``error: <message>`` on stderr and exit status 2, without a traceback. ``--debug`` (added to every
script's parser by :func:`add_debug_flag`) or ``LUFFY_DEBUG=1`` shows the traceback instead. Anything
else (a bug, an interrupted run) still raises with its full traceback.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Callable, Sequence

from luffy.data.errors import LuffyDataError

#: Exceptions that describe the user's input or environment, not a fault in the code.
USER_ERRORS: tuple[type[BaseException], ...] = (LuffyDataError, OSError, UnicodeError)

EXIT_USER_ERROR = 2


def debug_requested(argv: Sequence[str] | None = None) -> bool:
    """True when ``--debug`` is on the command line or ``LUFFY_DEBUG=1`` is set."""
    args = sys.argv[1:] if argv is None else argv
    return "--debug" in args or os.environ.get("LUFFY_DEBUG", "") not in ("", "0")


def add_debug_flag(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``--debug`` (show tracebacks of user errors) to ``parser``."""
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error (also LUFFY_DEBUG=1)")
    return parser


def report_user_error(err: BaseException) -> int:
    """Print ``error: ...`` for ``err`` on stderr (one line) and return the exit status."""
    message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if isinstance(err, OSError) and not isinstance(err, LuffyDataError):
        message = f"{err.strerror or type(err).__name__}: {err.filename}" if err.filename else message
    print(f"error: {message}", file=sys.stderr)
    return EXIT_USER_ERROR


def user_errors_exit(main: Callable[..., int]) -> Callable[..., int]:
    """Decorate a script's ``main(argv=None) -> int``: user errors become one line and exit status 2."""

    @functools.wraps(main)
    def wrapper(argv: Sequence[str] | None = None, *args, **kwargs) -> int:
        try:
            return main(argv, *args, **kwargs)
        except USER_ERRORS as err:
            if debug_requested(argv):
                raise
            return report_user_error(err)

    return wrapper
