"""User errors and the one-line rule: a bad value, a busy run folder or a refused resume prints one line
(what, the bad value, the valid choices) and exits 2; ``TDMT_DEBUG=1`` shows the traceback instead.

Every entry point (recipes, ``tdmt ...``) runs inside :func:`cli_errors`::

    with cli_errors("ktm_drl"):
        run(parse_args(Config, sys.argv[1:]))
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterator

USAGE_EXIT = 2  # bad input: the convention of argparse and the shells


class UserError(ValueError):
    """Bad input from the user (a config value, a path, a busy folder): shown as one line, never a traceback."""


# Errors that a user's input causes, anywhere in tdmt: shown as one line.
USER_ERRORS: tuple[type[BaseException], ...] = (UserError, ValueError, KeyError, TypeError, FileNotFoundError,
                                                FileExistsError, NotADirectoryError, PermissionError)


def debug() -> bool:
    return os.environ.get("TDMT_DEBUG", "") not in ("", "0")


def one_line(error: BaseException) -> str:
    """``str(error)`` on one line (a ``KeyError`` without its quotes)."""
    text = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
    return " ".join(str(text).split())


@contextlib.contextmanager
def cli_errors(prog: str) -> Iterator[None]:
    """Turn user errors into ``prog: message`` + exit 2, and stops (Ctrl-C, SIGTERM) into
    ``prog: stopped at step N — run the same command to resume`` + exit 128 + signal number."""
    from tdmt.algos.run import StopRequested  # late: tdmt.algos imports this module

    try:
        yield
    except StopRequested as stop:
        print(f"{prog}: {stop}", file=sys.stderr, flush=True)
        raise SystemExit(128 + (stop.signum or signal.SIGINT)) from None
    except KeyboardInterrupt:  # a second Ctrl-C: the last periodic checkpoint is the newest state
        print(f"{prog}: interrupted — run the same command to resume from the last checkpoint", file=sys.stderr)
        raise SystemExit(128 + signal.SIGINT) from None
    except USER_ERRORS as e:
        if debug():
            raise
        print(f"{prog}: {one_line(e)}", file=sys.stderr, flush=True)
        raise SystemExit(USAGE_EXIT) from None
