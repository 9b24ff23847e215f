"""A profile's measuring: candidates timed in pooled, shuffled rounds against the baseline, every pair stored.

    session = Session(spec, table, fp_id, measurer, progress=True)
    session.load(cands)        # what the latency table already holds
    session.measure(cands)     # pairs until each candidate is finished (decided and precise, or capped)
    session.fit()              # the latency model on what is stored
"""

from __future__ import annotations

import random
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from tcnsearch.profile.candidates import ProfileSpec
from tcnsearch.profile.latency_model import LatencyModel
from tcnsearch.profile.levels import METRICS, Shape
from tcnsearch.profile.measure import BaselineFailed
from tcnsearch.profile.result import decision, shapes_of
from tcnsearch.profile.table import LatencyTable, Stored, summarize_pairs
from tcnsearch.storage import exclusive
from tcnsearch.structure import Structure

GROUP = 4  # candidates per round between two baseline blocks
FLUSH_S = 2.0  # the longest a finished pair waits before it is written


def finished(spec: ProfileSpec, stored: Stored | None) -> bool:
    """Whether a measurement needs no more pairs under this spec's precision, threshold and cap."""
    if stored is None:
        return False
    if stored.status == "failed":
        return True
    if stored.status == "oom":
        return False  # the next run may have the memory
    if stored.n_pairs < spec.min_pairs:
        return False
    if stored.wall_s >= spec.max_time:
        return True
    med, lo, hi = stored.speedup[spec.metric]
    precise = hi - lo <= spec.precision * med
    return precise and decision((med, lo, hi), spec.min_speedup) != "undecided"



class Session:
    """One profile run: the table, the measurer, the progress bar, and what it has done."""

    def __init__(self, spec: ProfileSpec, table: LatencyTable, fp_id: int, measurer, progress: bool):
        self.spec, self.table, self.fp_id, self.measurer = spec, table, fp_id, measurer
        self.shapes = shapes_of(spec)
        self.stored: dict[tuple[Shape, Structure], Stored] = {}
        self.measured: set[tuple[Shape, Structure]] = set()
        self.oom: set[tuple[Shape, Structure]] = set()  # ran out of memory in this run: not tried again in it
        self.pairs = 0
        self.base_peak: int | None = None  # the baseline's, at the shape being measured
        self.bar = Progress(TextColumn("[bold]profile[/] {task.description}"), BarColumn(bar_width=16),
                            MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                            console=Console(stderr=True), disable=not progress, transient=False)
        self.task = self.bar.add_task(f"{spec.level} level", total=0)

    def load(self, cands: list[Structure]) -> None:
        self.stored.update(self.table.get(self.fp_id, self.spec.level, self.spec.context, self.shapes, cands))

    def done(self, cand: Structure) -> bool:
        return all(finished(self.spec, self.stored.get((s, cand))) or (s, cand) in self.oom for s in self.shapes)

    def measure(self, cands: list[Structure]) -> None:
        """Pairs for every (shape, candidate) among `cands` until each is finished.

        Pairs are written every FLUSH_S seconds and whenever a candidate finishes, not after every
        round: a database write between two blocks is a pause that disturbs the next block. The
        round after a write opens with a fresh baseline block.
        """
        todo = {s: self._pending(s, cands) for s in self.shapes}
        self.bar.update(self.task, total=self.bar.tasks[0].total + sum(map(len, todo.values())))
        for shape, pending in todo.items():
            # Another profile measuring this grid (a second terminal, a second driver) holds the shape
            # until it is done; this one then reads what it stored instead of measuring the same rows
            # beside it: two profilers on one device would time each other's noise, and both would
            # append pairs to one measurement.
            with self._hold(shape):
                self.load(pending)
                pending = self._pending(shape, pending)
                self.bar.advance(self.task, len(todo[shape]) - len(pending))
                before = {c: self.table.pairs(self.stored[(shape, c)].id) if (shape, c) in self.stored else []
                          for c in pending}
                new: dict[Structure, list] = {c: [] for c in pending}
                peaks: dict[Structure, int | None] = {}
                try:
                    self._rounds(shape, pending, new, before, peaks)
                finally:  # an interrupted profile keeps every finished pair
                    self._flush(shape, list(new), new, before, peaks)

    def _pending(self, shape: Shape, cands: list[Structure]) -> list[Structure]:
        return [c for c in cands if not finished(self.spec, self.stored.get((shape, c))) and (shape, c) not in self.oom]

    def _hold(self, shape: Shape):
        def waiting() -> None:
            self.bar.update(self.task, description=f"L={shape.length} waiting for another profile of this grid")

        key = f"tcnsearch-profile:{self.fp_id}:{self.spec.level}:{self.spec.context}:{shape}"
        return exclusive(self.table.engine, key, lock_file="profile.lock", on_wait=waiting)

    def _rounds(self, shape: Shape, pending: list, new: dict, before: dict, peaks: dict) -> None:
        """Passes over a pool of candidates at `shape` (up to the measurer's capacity: 16, or on a GPU what its
        free memory holds), in rounds of GROUP, until `pending` is empty and every candidate is finished.

        Each pass shuffles the pool and gives every candidate in it one pair, so a candidate's pairs are
        spread over the pool's whole measuring time (tens of seconds) rather than taken in one burst:
        the VM's slow spells, which last a second or more and do not slow the TCN and the EMA alike,
        then weigh on every candidate in the same proportion instead of falling on a few of them
        (Google Benchmark's random interleaving, over candidates instead of repetitions).
        """
        rng = random.Random(shape.length)
        pool: list[Structure] = []
        last_flush, fresh = time.perf_counter(), True
        try:
            capacity = self.measurer.capacity(self.spec, shape)
        except BaselineFailed as err:
            return self._baseline_failed(shape, pending, new, err)
        while pending or pool:
            while pending and len(pool) < capacity:
                pool.append(pending.pop(0))
            order = rng.sample(pool, len(pool))
            for start in range(0, len(order), GROUP):
                group = [c for c in order[start:start + GROUP] if c in pool]
                if not group:
                    continue
                # one structure and the length: short enough for an 80-column terminal with the bar
                self.bar.update(self.task, description=f"L={shape.length} {group[0].label}"
                                                       f"{f' +{len(group) - 1}' if len(group) > 1 else ''}")
                try:
                    result = self.measurer.round(self.spec, shape, group, fresh)
                except BaselineFailed as err:
                    return self._baseline_failed(shape, pool + pending, new, err)
                fresh = False
                self.base_peak = result.base_peak_bytes
                done = []
                for c in group:
                    self.measured.add((shape, c))
                    if c in result.failed or c in result.oom:
                        new[c] = []
                        self._fail(shape, c, *((result.failed[c], "failed") if c in result.failed
                                               else (result.oom[c], "oom")))
                        pool.remove(c)
                        self.bar.advance(self.task)
                        continue
                    new[c].append(result.pairs[c])
                    if c in result.peaks:
                        peaks[c] = result.peaks[c]
                    self.pairs += 1
                    if finished(self.spec, self._projected(shape, c, before[c] + new[c])):
                        done.append(c)
                if done or time.perf_counter() - last_flush >= FLUSH_S:
                    self._flush(shape, pool, new, before, peaks)
                    last_flush, fresh = time.perf_counter(), True
                for c in done:
                    pool.remove(c)
                    self.measurer.forget(self.spec, shape, c)
                    self.bar.advance(self.task)

    def _baseline_failed(self, shape: Shape, left: list[Structure], new: dict, err: BaselineFailed) -> None:
        """The EMA side cannot run at `shape`: nothing left there can be compared with it."""
        for c in left:
            new[c] = []
            self._fail(shape, c, str(err), "oom" if err.oom else "failed")
        self.bar.advance(self.task, len(left))

    def _flush(self, shape: Shape, which: list[Structure], new: dict, before: dict, peaks: dict) -> None:
        """Write the pairs taken since the last write (`new`), one transaction per candidate."""
        for c in which:
            if new[c]:
                self.stored[(shape, c)] = self.table.add_pairs(
                    self.fp_id, self.spec.level, self.spec.context, shape, c, new[c], before[c],
                    tcn_peak=peaks.pop(c, None), base_peak=self.base_peak, host=self.measurer.host())
                before[c] += new[c]
                new[c] = []

    def _projected(self, shape: Shape, cand: Structure, pairs: list) -> Stored:
        """The summary the table would store for these pairs (to decide whether to stop, before writing)."""
        return Stored(0, "ok", None, len(pairs), sum(p.wall_s for p in pairs),
                      {m: (v[f"speedup_{m}"], v[f"speedup_{m}_lo"], v[f"speedup_{m}_hi"])
                       for v in [summarize_pairs(pairs)] for m in METRICS}, {}, {}, None, None)

    def _fail(self, shape: Shape, cand: Structure, error: str, status: str = "failed") -> None:
        """Store a candidate that cannot run at `shape` ("failed"), or ran out of memory there ("oom")."""
        self.table.fail(self.fp_id, self.spec.level, self.spec.context, shape, cand, error, status)
        self.stored[(shape, cand)] = Stored(0, status, error, 0, 0.0, {m: None for m in METRICS}, {}, {},
                                            None, None)
        if status == "oom":
            self.oom.add((shape, cand))

    def fit(self) -> LatencyModel | None:
        rows = self.table.all_rows(self.fp_id, self.spec.level, self.spec.context)
        try:
            return LatencyModel.fit(rows)
        except ValueError:
            return None
