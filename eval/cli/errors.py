"""The error contract of every ``couplednoise`` subcommand.

- A user error (bad argument, bad config, missing weights, a path that cannot be read or written)
  prints ONE line to stderr, ``couplednoise SUBCOMMAND: error: ...``, and exits 2, before any
  expensive work where it can be known then.
- Ctrl-C exits 130; runs that resume (``eval``) keep every finished gallery.
- Anything else is a bug and keeps its traceback.

Subcommands raise ``UsageError`` (or the ValueError every library check raises, or
``MissingWeightsError``); ``run_guarded`` turns them into the line and the exit code.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UsageError(ValueError):
    """A mistake the user can fix: reported as one line, exit code 2."""


# Bad input (ValueError, the library's convention) and the file system refusing (OSError:
# missing or unwritable paths, a full disk; MissingWeightsError is one too) are the user's to fix.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError)


def one_line(error: BaseException) -> str:
    """The message of ``error`` on one line (newlines become '; ')."""
    text = str(error) or type(error).__name__
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        text = f"{error.strerror}: {error.filename}"
    return "; ".join(part.strip() for part in text.splitlines() if part.strip())


def run_guarded(prog: str, run: Callable[[], int]) -> int:
    """``run()`` with the contract applied: its exit code, 2 for user errors, 130 for Ctrl-C."""
    try:
        return int(run() or 0)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except USER_ERRORS as error:
        print(f"{prog}: error: {one_line(error)}", file=sys.stderr)
        return EXIT_USAGE
