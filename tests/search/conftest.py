import optuna
import pytest
import yaml
from optuna.trial import TrialState

from tcnsearch.profile import Survivor
from tcnsearch.search import load_spec, open_storage, opened_storage, trained
from tcnsearch.search.start import distributions, prepare_study, structure_space
from tcnsearch.structure import Structure

# A study small enough for seconds per trial: length 16, width 16, 40 steps, a 4-structure profile.
# One trial at a time: each concurrent trial is a Ray worker process that imports PyTorch (about 4 s of
# CPU), and the suite's workers share two cores; tests of concurrency ask for it.
SMALL = {
    "task": "assoc-recall",
    "objective": {"metric": "loss", "mode": "min"},
    "train": {"seq_len": 16, "vocab_size": 10, "train_examples": 500, "eval_examples": 100, "steps": 40,
              "eval_every": 10, "warmup_steps": 5, "batch_size": 16,
              "model": {"d_model": 16, "ffn_dim": 32, "chunk_size": 16}},
    "space": {"lr": {"low": 1.0e-3, "high": 1.0e-2, "log": True}, "model.dropout": {"choices": [0.0, 0.1]}},
    "profile": {"kernel_sizes": [3], "dilation_factors": [2, 4], "depths": [2, 3], "per_block": [1],
                "min_receptive_field": 8, "min_speedup": 0.01, "max_time": 0.05, "min_pairs": 3},
    "budget": {"trials": 3, "max_concurrent": 1},
    "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2},
    "heartbeat_s": 1,
}


def write_study(folder, name: str = "small", **changes) -> str:
    """Write SMALL with `changes` merged per top-level key as folder/name.yaml; returns its path."""
    doc = {k: (v | changes[k] if isinstance(v, dict) and k in changes else changes.get(k, v))
           for k, v in SMALL.items()}
    doc.update({k: v for k, v in changes.items() if k not in doc})
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def stored_trials(url: str, name: str, everything: bool = False) -> list[optuna.trial.FrozenTrial]:
    """The stored study's trained trials (`everything`: with the infeasible proposals); none while the
    study does not exist yet."""
    try:
        with opened_storage(url) as storage:  # tests poll this: no connection is left behind
            trials = optuna.load_study(study_name=name, storage=storage).get_trials()
    except KeyError:
        return []
    return trials if everything else [t for t in trials if trained(t)]


@pytest.fixture
def study_file(tmp_path):
    """Write a study file (SMALL with `changes` merged per top-level key) and return its path."""
    return lambda name="small", **changes: write_study(tmp_path, name, **changes)


def survivor(k: int, f: int, d: int, b: int = 1, latency_ms: float = 1.0, speedup: float = 2.0) -> Survivor:
    """A survivor record as a profile would make it: one speedup for both metrics, a narrow interval."""
    return Survivor(Structure(k, f, d, b), latency_ms, speedup, (speedup * 0.95, speedup * 1.05), speedup,
                    (speedup * 0.95, speedup * 1.05), tcn_fwd_ms=latency_ms / 2, tcn_fwdbwd_ms=latency_ms,
                    ema_fwd_ms=speedup * latency_ms / 2, ema_fwdbwd_ms=speedup * latency_ms)


FINISHED_GRID = {"kernel_size": [3], "dilation_factor": [2, 4], "depth": [2, 3], "per_block": [1]}


def finished_study(tmp_path, url, directions=("minimize",), name="exported"):
    """A tcnsearch study of 4 trials over K3 TCNs: #0 COMPLETE 0.5, #1 COMPLETE 0.2 (the best), #2 FAIL,
    #3 PRUNED; with two directions the second is the latency (both COMPLETE trials on the front)."""
    spec = load_spec(write_study(tmp_path, train={"steps": 40, "model": {"d_model": 24, "ffn_dim": 32,
                                                                          "chunk_size": 16}}))
    survivors = [survivor(3, f, d, 1, latency_ms=f + d) for f in (2, 4) for d in (2, 3)]
    metrics = ["loss", "latency_ms"][:len(directions)]
    study, survivors, grid = prepare_study(spec, open_storage(url), name, list(directions), metrics, survivors,
                                           FINISHED_GRID, False, optuna.samplers.RandomSampler(0),
                                           {"preset": "tiny", "device": "cpu: test"})
    dists = distributions(structure_space(survivors, grid, spec), spec)
    for i, (value, state) in enumerate([(0.5, TrialState.COMPLETE), (0.2, TrialState.COMPLETE),
                                        (None, TrialState.FAIL), (0.9, TrialState.PRUNED)]):
        s = survivors[i]
        params = s.structure.as_params() | {"lr": 2e-3 * (i + 1), "model.dropout": 0.1}
        study.add_trial(optuna.trial.create_trial(
            state=state, params=params, distributions=dists, user_attrs={"tcn": s.label, "num_parameters": 1000},
            values=([value, s.latency_ms] if len(directions) == 2 else [value]) if value is not None else None))
    return spec, study
