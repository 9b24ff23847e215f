"""Data sets and the tasks a run trains on: associative recall (synthetic), enwik8, the Long Range Arena."""

from tcnsearch.data import enwik8, lra
from tcnsearch.data.assoc_recall import IGNORE, associative_recall
from tcnsearch.data.tasks import AssocRecallTask, Enwik8Task, LRATask, TaskSettings, make_task, prepare_data

__all__ = ["IGNORE", "AssocRecallTask", "Enwik8Task", "LRATask", "TaskSettings", "associative_recall", "enwik8",
           "lra", "make_task", "prepare_data"]
