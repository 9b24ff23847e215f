"""Data sets: associative recall (synthetic) and enwik8; the Long Range Arena is still to come."""

from tcnsearch.data import enwik8
from tcnsearch.data.assoc_recall import IGNORE, associative_recall

__all__ = ["IGNORE", "associative_recall", "enwik8"]
