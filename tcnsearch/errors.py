"""Errors that the CLI turns into one line on stderr and an exit code, and the readers that raise them."""

import errno
from pathlib import Path

import yaml
from pydantic import ValidationError


class UserError(Exception):
    """Bad input (a flag, a file, a device, a database URL): exit code 2, one line, no traceback.

    The message says what is wrong and what to do about it.
    """


def disk_full(exc: BaseException) -> str | None:
    """The one line for a failure that is a full disk (a file, SQLite, PostgreSQL), else None.

    What was committed before stays (SQLite and PostgreSQL keep a committed row through a full disk,
    and every command continues what is stored), so the advice is to free space and run it again.
    """
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        where = None
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            where = f" writing {exc.filename}" if exc.filename else ""
        elif type(exc).__name__ == "DiskFull" or any(  # psycopg's class for PostgreSQL's SQLSTATE 53100
                s in str(exc) for s in ("database or disk is full", "No space left on device",
                                        "could not extend file")):
            where = " in the database"
        if where is not None:
            return (f"the disk is full{where}; what was stored before is kept: free some space and run the same "
                    "command again to continue")
        exc = exc.__cause__ or exc.__context__ or getattr(exc, "orig", None)
    return None


def validation_message(err: ValidationError, prefix: str = "") -> str:
    """The first problem pydantic found, as one line: 'field: message'."""
    first = err.errors()[0]
    msg = first["msg"].removeprefix("Value error, ")
    where = ".".join(str(p) for p in (prefix, *first["loc"]) if p != "")
    return f"{where}: {msg}" if where else msg


def read_yaml(path: str | Path):
    """A YAML file's document; an unreadable file or bad YAML is a UserError naming the file (and line)."""
    try:
        return yaml.safe_load(Path(path).read_text())
    except IsADirectoryError:
        raise UserError(f"{path} is a folder; give a .yaml file") from None
    except OSError as err:
        raise UserError(f"cannot read {path}: {err.strerror}") from None
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: not a text file (byte {err.start} is not UTF-8); give a YAML study file") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise UserError(f"{path}: not valid YAML{at}: {getattr(err, 'problem', err)}") from None
