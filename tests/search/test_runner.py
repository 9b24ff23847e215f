"""Real studies: a Ray cluster (the session's head), Optuna on SQLite and PostgreSQL, real training."""

import optuna
import psycopg
import pytest
from optuna.trial import TrialState

from tcnsearch.errors import UserError
from tcnsearch.search import frozen, run_study
from tests.conftest import PG_ADMIN, wait_for
from tests.search.conftest import stored_trials

pytestmark = [pytest.mark.slow, pytest.mark.ray]


def test_a_study_stores_every_trial_with_its_structure_and_latency(study_file, sqlite_url, ray_head):
    result = run_study(study_file(budget={"max_concurrent": 2}), storage=sqlite_url, ray_address=ray_head,
                       progress=False)
    trials = stored_trials(sqlite_url, "small-tiny")
    assert len(trials) == 3 and result.ran == 3
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials), [t.state for t in trials]
    assert result.counts["RUNNING"] == 0 and result.counts["COMPLETE"] >= 1
    survivors = {s.label: s for s in frozen(optuna.load_study(study_name="small-tiny", storage=sqlite_url))[0]}
    for t in trials:
        label = t.user_attrs["tcn"]
        assert label in survivors and survivors[label].structure.as_params() == {k: t.params[k] for k in "KfDB"}
        assert t.params["B"] == 1 and 1e-3 <= t.params["lr"] <= 1e-2 and t.params["model.dropout"] in (0.0, 0.1)
        assert t.user_attrs["latency_ms"] == survivors[label].latency_ms > 0
        assert t.user_attrs["receptive_field"] >= 8 and t.user_attrs["num_parameters"] > 0
        assert t.user_attrs["device"] == result.device
        # The latency is the study's own model's, measured, with its interval and decision.
        assert t.user_attrs["level"] == "model" and t.user_attrs["source"] == "measured"
        assert t.user_attrs["decision"] == "survivor"
        low, high = t.user_attrs["speedup_fwdbwd_ci"]
        assert low <= t.user_attrs["speedup_fwdbwd"] <= high and low >= 0.01
        assert t.intermediate_values and min(t.intermediate_values) == 10  # one per evaluation
    attrs = optuna.load_study(study_name="small-tiny", storage=sqlite_url).user_attrs
    assert attrs["profile_level"] == "model" and attrs["profile_backend"] == "native"
    assert attrs.get("profile_warnings", []) == result.warnings
    assert attrs["survivors"] == len(survivors) and attrs["objective"] == "min loss"  # short, for people
    assert all(isinstance(v, (str, int, float, list)) and len(str(v)) < 200 for v in attrs.values())
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert all(max(t.intermediate_values) == 40 and t.value == t.intermediate_values[40] for t in complete)
    assert result.best[0]["values"][0] == min(t.value for t in complete)


def test_asha_stops_become_pruned_not_complete(study_file, sqlite_url, ray_head):
    # Eight one-at-a-time trials with an aggressive ASHA: some are stopped after one evaluation.
    path = study_file(budget={"trials": 8, "max_concurrent": 1},
                      scheduler={"grace_period": 1, "reduction_factor": 4})
    result = run_study(path, storage=sqlite_url, ray_address=ray_head, progress=False)
    trials = stored_trials(sqlite_url, "small-tiny")
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert pruned and result.counts["PRUNED"] == len(pruned)
    assert all(max(t.intermediate_values) < 40 for t in pruned)  # stopped before the last step
    assert all(max(t.intermediate_values) == 40 for t in trials if t.state == TrialState.COMPLETE)


def test_diverging_trials_fail_with_their_reason(study_file, sqlite_url, ray_head):
    path = study_file(train={"grad_clip": 0, "warmup_steps": 0},
                      # One AdamW step moves each weight by about lr: at 1e30 the next forward overflows
                      # float32 whatever the data (at 1e10 a loss could, rarely, stay finite).
                      space={"lr": {"low": 1.0e30, "high": 1.0e33, "log": True}}, budget={"trials": 1},
                      scheduler={"type": "none"})
    result = run_study(path, storage=sqlite_url, ray_address=ray_head, progress=False)
    trials = stored_trials(sqlite_url, "small-tiny")
    assert result.counts["FAIL"] == 1 and all(t.state == TrialState.FAIL for t in trials)
    assert all("non-finite training loss" in t.user_attrs["fail_reason"] for t in trials)
    assert result.best == []


def test_resume_runs_only_what_is_missing_and_a_rerun_without_it_is_refused(study_file, sqlite_url, ray_head):
    path = study_file(budget={"trials": 2})
    run_study(path, storage=sqlite_url, ray_address=ray_head, progress=False)
    before = {t.number: (t.state, t.params, t.value) for t in stored_trials(sqlite_url, "small-tiny")}
    with pytest.raises(UserError, match="already holds 2 trials; --resume continues it"):
        run_study(path, storage=sqlite_url, ray_address=ray_head, progress=False)
    result = run_study(path, storage=sqlite_url, ray_address=ray_head, trials=3, resume=True, progress=False)
    after = stored_trials(sqlite_url, "small-tiny")
    assert result.ran == 1 and len(after) == 3
    assert {t.number: (t.state, t.params, t.value) for t in after[:2]} == before  # untouched
    again = run_study(path, storage=sqlite_url, ray_address=ray_head, trials=3, resume=True, progress=False)
    assert again.ran == 0 and len(stored_trials(sqlite_url, "small-tiny")) == 3


def test_multi_objective_keeps_the_pareto_front(study_file, sqlite_url, ray_head):
    result = run_study(study_file(scheduler={"type": "none"}), storage=sqlite_url, ray_address=ray_head,
                       multi_objective=True, progress=False)
    study = optuna.load_study(study_name="small-tiny-pareto", storage=sqlite_url)
    assert [d.name for d in study.directions] == ["MINIMIZE", "MINIMIZE"]
    assert study.metric_names == ["loss", "latency_ms"]
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 3
    for t in complete:
        assert t.values[1] == t.user_attrs["latency_ms"]
    front = {t.number for t in study.best_trials}
    assert {b["number"] for b in result.best} == front
    for t in complete:  # a trial is off the front only if another beats it on both
        beaten = any(o.values[0] <= t.values[0] and o.values[1] <= t.values[1] and o.values != t.values
                     for o in complete)
        assert (t.number not in front) == beaten


def test_postgresql_holds_the_study_and_the_profile_and_no_connection_stays_open(study_file, pg_fresh_url,
                                                                                  ray_head):
    result = run_study(study_file(budget={"trials": 2}), storage=pg_fresh_url, ray_address=ray_head,
                       study_name="small-on-pg", progress=False)
    assert result.storage == pg_fresh_url  # no password to mask here
    # A caller that runs many studies in one process (the tests, a notebook) must not use up the
    # server's connections: once run_study returns, nothing of it is connected to the database.
    def open_there() -> int:  # (a closed connection's server process ends a moment after the close)
        with psycopg.connect(PG_ADMIN) as conn:
            return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s",
                                (pg_fresh_url.rsplit("/", 1)[1],)).fetchone()[0]

    assert wait_for(lambda: open_there() == 0, timeout=10, every=0.5), open_there()
    trials = stored_trials(pg_fresh_url, "small-on-pg")
    assert len(trials) == 2 and all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)


def test_refusals_come_before_anything_is_stored(study_file, tmp_path, ray_head):
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    with pytest.raises(UserError, match="no TCN structure of the profile beats the EMA by 1000000.0x"):
        run_study(study_file(profile={"min_speedup": 1e6}), storage=url, ray_address=ray_head, progress=False)
    assert optuna.get_all_study_summaries(url) == []
    with pytest.raises(UserError, match="cannot reach the database"):
        run_study(study_file(), storage="postgresql+psycopg://nobody@127.0.0.1:1/none", progress=False)
    with pytest.raises(UserError, match="unknown GPU 'v99'"):
        run_study(study_file(), storage=url, gpu="v99", progress=False)


def test_a_latency_budget_is_a_constraint_and_never_loses_to_a_trial_over_it(study_file, sqlite_url, ray_head):
    """Structures over `max_latency_ms` are proposed, told infeasible and never trained; every trial
    carries its constraint values; the best is within the budget."""
    run_study(study_file(budget={"trials": 1}), storage=sqlite_url, ray_address=ray_head, progress=False)
    survivors, _ = frozen(optuna.load_study(study_name="small-tiny", storage=sqlite_url))
    latencies = sorted(s.latency_ms for s in survivors)
    budget = (latencies[1] + latencies[2]) / 2  # two of the four within it
    path = study_file(name="budget", objective={"metric": "loss", "mode": "min", "max_latency_ms": budget},
                      budget={"trials": 3}, sampler={"type": "random", "seed": 3})
    result = run_study(path, storage=sqlite_url, ray_address=ray_head, progress=False)
    everything = stored_trials(sqlite_url, "budget-tiny", everything=True)
    trained = [t for t in everything if "infeasible" not in t.user_attrs]
    assert len(trained) == 3 and all(t.user_attrs["latency_ms"] <= budget for t in trained)
    assert all(set(t.constraints) == {"survivor", "latency_ms"} for t in everything)  # on every trial
    assert all(max(t.constraints.values()) <= 0 for t in trained)
    infeasible = [t for t in everything if "infeasible" in t.user_attrs]
    assert all(max(t.constraints.values()) > 0 and not t.intermediate_values for t in infeasible)
    assert result.counts["INFEASIBLE"] == len(infeasible) and result.best[0]["latency_ms"] <= budget
    with pytest.raises(UserError, match="no survivor meets the latency budget"):
        run_study(study_file(name="impossible", objective={"metric": "loss", "max_latency_ms": latencies[0] / 10}),
                  storage=sqlite_url, ray_address=ray_head, progress=False)
    assert "impossible-tiny" not in [s.study_name for s in optuna.get_all_study_summaries(sqlite_url)]


def test_enqueued_structures_run_first_and_a_warm_start_informs_without_counting(study_file, sqlite_url, ray_head):
    run_study(study_file(budget={"trials": 2}, scheduler={"type": "none"}), storage=sqlite_url,
              ray_address=ray_head, progress=False)
    source = [t for t in stored_trials(sqlite_url, "small-tiny") if t.state == TrialState.COMPLETE]
    result = run_study(study_file(budget={"trials": 2, "max_concurrent": 1}, scheduler={"type": "none"}),
                       storage=sqlite_url, ray_address=ray_head, progress=False, study_name="seeded",
                       warm_start="small-tiny", enqueue=["3,4,3,1", "paper"])
    everything = stored_trials(sqlite_url, "seeded", everything=True)
    copied = [t for t in everything if "warm_start_from" in t.user_attrs]
    assert sorted(t.value for t in copied) == sorted(t.value for t in source) and result.counts["WARM_START"] == 2
    mine = stored_trials(sqlite_url, "seeded")
    assert len(mine) == 2 and [t.user_attrs["tcn"] for t in mine][0] == "K3-f4-D3-B1"  # the first queued
    # the paper's K17-f?-D4-B1 is not in this grid: its nearest survivor was queued, and the note says so
    assert any("the paper's K17-" in w and "queued its nearest" in w for w in result.warnings)
    assert any("warm start: copied 2 finished trials" in w for w in result.warnings)
    assert result.best[0]["number"] in {t.number for t in mine}
    with pytest.raises(UserError, match="--enqueue K5-f4-D3-B1: not a structure this study may train"):
        run_study(study_file(), storage=sqlite_url, ray_address=ray_head, progress=False, study_name="other",
                  enqueue=["5,4,3,1"])
    assert "other" not in [s.study_name for s in optuna.get_all_study_summaries(sqlite_url)]
