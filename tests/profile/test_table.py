"""The latency table: pairs appended across runs with their summary recomputed, failures apart, on SQLite
and PostgreSQL."""

import statistics

import pytest
import torch

from tcnsearch.profile import LatencyTable, Shape, fingerprint, median_interval
from tcnsearch.profile.measure import Pair
from tcnsearch.storage import create_engine
from tcnsearch.structure import Structure

SHAPE = Shape(1, 8, 256, 4, False)
A, B = Structure(3, 2, 3, 1), Structure(5, 4, 3, 1)


@pytest.fixture(params=["sqlite", "postgresql"])
def table(request):
    # Each test reads everything stored under its fingerprint: a database of its own, PostgreSQL's too.
    engine = create_engine(request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_fresh_url"))
    yield LatencyTable(engine)
    engine.dispose()


def _pairs(ratios_fwd, ratios_fwdbwd) -> list[Pair]:
    return [Pair(1.0, f, 2.0, 2.0 * b, 0.1) for f, b in zip(ratios_fwd, ratios_fwdbwd, strict=True)]


def test_a_fingerprint_has_one_id_and_another_device_another(table):
    fp = fingerprint(torch.device("cpu"), "fp32")
    first = table.fingerprint_id(fp)
    assert table.fingerprint_id(fp) == first
    other = type(fp)(**(fp.as_dict() | {"threads": fp.threads + 7}))
    assert table.fingerprint_id(other, create=False) is None and table.fingerprint_id(other) != first


def test_pairs_accumulate_and_the_summary_is_recomputed_from_all_of_them(table):
    fp_id = table.fingerprint_id(fingerprint(torch.device("cpu"), "fp32"))
    first = _pairs([2.0, 2.2, 1.8], [1.5, 1.4, 1.6])
    table.add_pairs(fp_id, "op", "", SHAPE, A, first, [])
    more = _pairs([2.4, 2.1], [1.3, 1.7])
    stored = table.add_pairs(fp_id, "op", "", SHAPE, A, more, first, tcn_peak=1024, base_peak=4096)
    everything = [2.0, 2.2, 1.8, 2.4, 2.1]
    assert stored.n_pairs == 5 and stored.speedup["fwd"] == median_interval(everything, seed=5)
    assert stored.tcn_ms["fwd"] == 1.0 and stored.base_ms["fwd"] == statistics.median(everything)
    assert (stored.tcn_peak_bytes, stored.base_peak_bytes) == (1024, 4096)
    assert [p.base_fwd_ms for p in table.pairs(stored.id)] == everything  # in the order they were taken
    got = table.get(fp_id, "op", "", [SHAPE, Shape(1, 8, 512, 4, False)], [A, B])
    assert set(got) == {(SHAPE, A)} and got[(SHAPE, A)].n_pairs == 5
    assert table.get(fp_id, "model", "abc", [SHAPE], [A]) == {}  # another level and model: another row


def test_failures_and_out_of_memory_are_kept_apart_and_drop_the_pairs(table):
    fp_id = table.fingerprint_id(fingerprint(torch.device("cpu"), "fp32"))
    table.add_pairs(fp_id, "op", "", SHAPE, A, _pairs([2.0] * 3, [1.0] * 3), [])
    table.fail(fp_id, "op", "", SHAPE, A, "out of memory at batch 1 x 8 channels", status="oom")
    table.fail(fp_id, "op", "", SHAPE, B, "ValueError: kernel_size must be >= 2")
    got = table.get(fp_id, "op", "", [SHAPE], [A, B])
    assert got[(SHAPE, A)].status == "oom" and got[(SHAPE, A)].n_pairs == 0 and table.pairs(got[(SHAPE, A)].id) == []
    assert got[(SHAPE, B)].status == "failed" and got[(SHAPE, A)].speedup["fwd"] is None
    assert table.all_rows(fp_id, "op", "") == []  # what a latency model learns from: measurements only
    (summary,) = [r for r in table.summary() if (r["level"], r["channels"], r["length"]) == ("op", 8, 256)]
    assert (summary["tcn"], summary["failed"]) == (2, 1)


def test_clear_forgets_the_measurements_and_their_pairs(table):
    fp_id = table.fingerprint_id(fingerprint(torch.device("cpu"), "fp32"))
    stored = table.add_pairs(fp_id, "op", "", SHAPE, A, _pairs([2.0] * 3, [1.0] * 3), [])
    table.add_pairs(fp_id, "op", "", SHAPE, B, _pairs([3.0] * 3, [1.0] * 3), [])
    table.clear(fp_id, "op", "", [SHAPE], [A])
    assert set(table.get(fp_id, "op", "", [SHAPE], [A, B])) == {(SHAPE, B)} and table.pairs(stored.id) == []


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_commands_starting_at_once_on_a_new_database_both_get_the_tables(backend, tmp_path, request):
    """Two profiles (or a profile and a study) starting together on an empty database both find the
    tables missing; the one that creates second must not fail (PostgreSQL refuses its CREATE TABLE)."""
    import threading

    url = request.getfixturevalue("pg_fresh_url") if backend == "postgresql" else f"sqlite:///{tmp_path / 'new.db'}"
    engines = [create_engine(url) for _ in range(4)]
    start, errors = threading.Barrier(len(engines)), []

    def open_table(engine):
        start.wait()
        try:
            LatencyTable(engine)
        except Exception as err:  # noqa: BLE001 - collected, and the assertion shows it
            errors.append(repr(err)[:200])

    threads = [threading.Thread(target=open_table, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for e in engines:
        e.dispose()
    assert errors == []
    engine = create_engine(url)
    assert LatencyTable(engine, create=False).has_tables()
    engine.dispose()
