"""The live line a study shows over its budget: finished of target, running, complete, pruned, failed, best."""

from __future__ import annotations

import optuna
from optuna.trial import TrialState
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from tcnsearch.search.trials import trained


class StudyProgress:
    """A live line over the study's budget: finished of target, running, complete, pruned, failed, best so far.

    The counts are the study's when the run started plus what this driver has ended since, so no
    database query runs per Tune event; other drivers' trials show up in the final table.
    """

    def __init__(self, study: optuna.Study, total: int, done: int, enabled: bool):
        trials = [t for t in study.get_trials(deepcopy=False) if trained(t)]
        self.before = {s: sum(t.state == TrialState[s] for t in trials) for s in ("COMPLETE", "PRUNED", "FAIL")}
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        self.best = None
        if len(study.directions) == 1 and complete:
            sign = 1 if study.direction == optuna.study.StudyDirection.MINIMIZE else -1
            best = min(complete, key=lambda t: sign * t.value)
            self.best = (best.value, best.number)
        self.bar = Progress(TextColumn("[bold]study[/]"), BarColumn(bar_width=6), MofNCompleteColumn(),
                            TextColumn("{task.description}"), TimeElapsedColumn(), console=Console(stderr=True),
                            disable=not enabled)
        self.task = self.bar.add_task("starting Ray", total=total, completed=done)

    def line(self, searcher) -> str:
        count = {s: self.before[s] + searcher.outcomes[s] for s in self.before}
        best = self.best
        if searcher.best is not None and (best is None or (searcher.best[0] < best[0]) == (searcher.mode == "min")):
            best = searcher.best
        shown = f"best {best[0]:.3g} (#{best[1]})" if best else "best -"
        # Short enough for an 80-column terminal with the bar, the count and the clock.
        return (f"{len(searcher.running_trial_ids())} running, {count['COMPLETE']} ok, {count['PRUNED']} pruned, "
                f"{count['FAIL']} failed, {shown}")

    def show(self, searcher) -> None:
        self.bar.update(self.task, description=self.line(searcher))

    def advance(self, searcher) -> None:
        self.bar.update(self.task, advance=1, description=self.line(searcher))
