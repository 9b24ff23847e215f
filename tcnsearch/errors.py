"""Errors that the CLI turns into one line on stderr and an exit code, and the readers that raise them."""

from pathlib import Path

import yaml
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
