"""The one exception type for mistakes in a user's setup (an option, a file, a shape).

An error of this kind says what is wrong and how to fix it; ``train.py`` prints it as one line, without a
traceback, and exits with status 2 (the traceback goes to the run's log, and to the terminal with
``--verbose``). Any other exception is a bug or an accident and keeps its traceback.

Our specific errors derive from it and from the builtin a caller would expect (``ValueError``,
``FileNotFoundError``, ``OSError``), so ``except ValueError`` keeps working.
"""


class UserError(Exception):
    """A problem the user fixes (the message names the option or file and the fix)."""


class ConfigError(UserError, ValueError):
    """An option value that cannot work (out of range, unknown choice, too deep for the model, ...)."""


def one_line(err: BaseException) -> str:
    """The message on one line: a line after one ending in ':' follows with a space, others with '; '
    (list markers dropped)."""
    lines = [line.strip().removeprefix("- ") for line in str(err).strip().splitlines() if line.strip()]
    text = lines[0] if lines else type(err).__name__
    for line in lines[1:]:
        text += (" " if text.endswith(":") else "; ") + line
    return text


class MissingFileError(UserError, FileNotFoundError):
    """A file the run needs is not there (the message names it and how to make it)."""


class DiskFullError(UserError, OSError):
    """A file could not be written because its device (or the user's quota) is full; the message names it."""


class UnsafeFileError(UserError, ValueError):
    """A file holds pickled Python objects that loading would have to create or call: refused unread."""
