"""Errors that the CLI turns into one line on stderr and an exit code."""


class UserError(Exception):
    """Bad input (a flag, a file, a device, a database URL): exit code 2, one line, no traceback.

    The message says what is wrong and what to do about it.
    """
