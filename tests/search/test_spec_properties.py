"""Property-based: whatever a study file or a --set value holds, the validators answer with a valid
config or a clean UserError, never another exception (which the CLI would report as a crash)."""

import copy
import math

import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tcnsearch.errors import UserError
from tcnsearch.search import StudySpec, load_spec
from tcnsearch.train import TrainConfig, make_config, parse_set
from tests.search.conftest import SMALL

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                      st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                      max_leaves=8)
# Where in a study file a value lands: top-level sections and the fields users edit most.
PLACES = [("task",), ("name",), ("objective", "metric"), ("objective", "mode"), ("space", "lr", "low"),
          ("space", "lr", "high"), ("space", "lr", "log"), ("space", "model.dropout", "choices"), ("space", "x.y"),
          ("profile", "kernel_sizes"), ("profile", "lengths"), ("profile", "min_speedup"), ("profile", "level"),
          ("profile", "precision"), ("budget", "trials"), ("budget", "cpus_per_trial"),
          ("scheduler", "reduction_factor"), ("train", "lr"), ("train", "model", "dropout"), ("train", "steps"),
          ("presets",), ("presets", "tiny"), ("heartbeat_s",), ("space",), ("profile",)]


def _put(doc: dict, place: tuple, value) -> None:
    for key in place[:-1]:
        if not isinstance(doc.get(key), dict):
            doc[key] = {}
        doc = doc[key]
    doc[place[-1]] = value


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(changes=st.lists(st.tuples(st.sampled_from(PLACES), values), min_size=1, max_size=3),
       preset=st.sampled_from(["tiny", "cpu", "paper"]))
def test_a_generated_study_file_is_valid_or_a_clean_error(tmp_path, changes, preset):
    doc = copy.deepcopy(SMALL)
    for place, value in changes:
        _put(doc, place, value)
    path = tmp_path / "generated.yaml"
    path.write_text(yaml.safe_dump(doc))
    try:
        spec = load_spec(str(path), preset)
    except UserError as err:
        return _a_clean_error(err)
    event("a valid study")
    assert isinstance(spec, StudySpec)
    for param in spec.space.values():  # what passed holds no NaN or infinity anywhere a number is used
        assert all(math.isfinite(v) for v in (param.low, param.high) if isinstance(v, float))


keys = st.sampled_from(["lr", "steps", "seed", "device", "model.dropout", "model.d_model", "model.tcn.depth",
                        "batch_size", "weight_decay", "no.such.key", "", "model", "grad_clip"])
raw = st.one_of(st.text(max_size=20), st.sampled_from(["nan", "inf", "-inf", ".nan", "1e400", "!!python/name:os",
                                                       "[1, 2", "{a: 1}", "0x10", "1_000", "true", "~", "cuda:0"]))


@settings(max_examples=300, deadline=None)
@given(items=st.lists(st.tuples(keys, raw), min_size=1, max_size=3))
def test_generated_set_values_give_a_config_or_a_clean_error(items):
    try:
        cfg = make_config("assoc-recall", "tiny", parse_set([f"{k}={v}" for k, v in items]))
    except UserError as err:
        return _a_clean_error(err)
    event("a valid config")
    assert isinstance(cfg, TrainConfig)
    assert all(math.isfinite(v) for v in (cfg.lr, cfg.weight_decay, cfg.model.dropout))


def _a_clean_error(err: UserError) -> None:
    assert str(err) and "\n" not in str(err)
    event("a clean error")
