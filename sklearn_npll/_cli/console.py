"""What the command line prints, and the errors it reports in one line."""

import sys

__all__ = ["CLIError", "say", "step", "listed"]

# How many names an error lists before "and N more".
MAX_LISTED = 10


class CLIError(Exception):
    """A problem with what the user asked for: reported in one line, without
    a traceback, and the program exits with status 1."""


def say(message=""):
    """Print a line of progress (on stderr, so that stdout carries only data)."""
    print(message, file=sys.stderr, flush=True)


def step(number, total, title):
    """Announce step ``number`` of ``total``."""
    say(f"[{number}/{total}] {title}")


def listed(items, max_listed=MAX_LISTED):
    """``"a, b, c"``, or the first ``max_listed`` and ``"and N more"``."""
    items = [str(i) for i in items]
    shown = ", ".join(items[:max_listed])
    if len(items) > max_listed:
        shown += f" and {len(items) - max_listed} more"
    return shown
