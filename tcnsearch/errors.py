"""Errors that the CLI turns into one line on stderr and an exit code."""

from pydantic import ValidationError


class UserError(Exception):
    """Bad input (a flag, a file, a device, a database URL): exit code 2, one line, no traceback.

    The message says what is wrong and what to do about it.
    """


def validation_message(err: ValidationError, prefix: str = "") -> str:
    """The first problem pydantic found, as one line: 'field: message'."""
    first = err.errors()[0]
    msg = first["msg"].removeprefix("Value error, ")
    where = ".".join(str(p) for p in (prefix, *first["loc"]) if p != "")
    return f"{where}: {msg}" if where else msg
