"""The `tcnsearch` command: thin shells over library functions (app), the tables it prints (printers, tables)."""

from tcnsearch.cli.app import cli, main

__all__ = ["cli", "main"]
