"""Data sets: associative recall (synthetic) so far; enwik8 and the Long Range Arena to come."""

from tcnsearch.data.assoc_recall import IGNORE, associative_recall

__all__ = ["IGNORE", "associative_recall"]
