import pytest
import yaml

from tcnsearch.errors import UserError
from tcnsearch.search import load_spec
from tcnsearch.search.spec import shipped_studies
from tcnsearch.structure import Structure
from tcnsearch.train import PRESETS

STUDIES = ["enwik8", "assoc-recall", "lra-listops", "lra-text", "lra-retrieval", "lra-image", "lra-pathfinder",
           "lra-pathx"]


@pytest.mark.parametrize("name", STUDIES)
@pytest.mark.parametrize("preset", ["tiny", "cpu", "paper"])
def test_every_shipped_study_loads_for_every_preset(name, preset):
    spec = load_spec(name, preset)
    assert spec.task == name and spec.preset == preset and spec.space
    cfg = spec.base_config()
    profile = spec.profile_spec()
    assert profile.channels == cfg.model.d_model and profile.batch == cfg.batch_size
    assert profile.candidates(), "the profile grid must leave candidates"
    if name == "enwik8":
        assert profile.lengths == sorted({cfg.model.chunk_size * c for c in cfg.chunk_counts})
    else:
        assert profile.lengths == [cfg.seq_len]
    assert profile.bidirectional == name.startswith("lra-")


def test_shipped_studies_are_the_tasks():
    assert sorted(shipped_studies()) == sorted(STUDIES)
    assert set(STUDIES) == set(PRESETS)


def test_paper_preset_holds_the_papers_settings():
    spec = load_spec("enwik8", "paper")
    cfg = spec.base_config()
    assert (cfg.model.n_layers, cfg.model.d_model, cfg.model.chunk_size, cfg.lr, cfg.weight_decay) == (
        12, 512, 2048, 5e-3, 0.2)


def test_trial_config_applies_searched_values_and_the_structure(study_file):
    spec = load_spec(study_file())
    cfg = spec.trial_config({"lr": 5e-3, "model.dropout": 0.1}, Structure(3, 4, 2, 1))
    assert cfg.lr == 5e-3 and cfg.model.dropout == 0.1 and cfg.model.d_model == 16
    assert cfg.model.tcn.structure == Structure(3, 4, 2, 1)


@pytest.mark.parametrize("changes,message", [
    ({"budget": {"trials": 0}}, "budget.trials: Input should be greater than or equal to 1"),
    ({"objective": {"metric": "f1"}}, "objective.metric"),
    ({"space": {"lr": {"low": 1.0, "high": 0.1}}}, "space.lr: low (1.0) must be below high (0.1)"),
    ({"space": {"lr": {"low": 1.0}}}, "give either choices"),
    ({"space": {"model.tcn.depth": {"choices": [2, 3]}}}, "drop model.tcn keys"),
    ({"space": {"model.widht": {"choices": [2, 3]}}}, "model.widht: Extra inputs are not permitted"),
    ({"space": {"lr": {"low": -1.0, "high": 1.0}}}, "lr: Input should be greater than 0"),
    ({"task": "imagenet"}, "unknown task 'imagenet'"),
    ({"scheduler": {"type": "hyperband"}}, "scheduler.type"),
    ({"colour": "blue"}, "colour: Extra inputs are not permitted"),
    ({"profile": {"kernel_sizes": []}}, "profile.kernel_sizes"),
])
def test_malformed_study_files_get_one_line_naming_the_field(study_file, changes, message):
    with pytest.raises(UserError) as err:
        load_spec(study_file(**changes))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_unreadable_study_files(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: [assoc-recall\n")
    with pytest.raises(UserError, match="not valid YAML at line"):
        load_spec(str(bad))
    bad.write_text(yaml.safe_dump(["a", "list"]))
    with pytest.raises(UserError, match="expected a mapping"):
        load_spec(str(bad))
    with pytest.raises(UserError, match="unknown study 'nope'; choose one of .*assoc-recall"):
        load_spec("nope")
    bad.write_text(yaml.safe_dump({"task": "assoc-recall", "presets": {"huge": {}}}))
    with pytest.raises(UserError, match="unknown preset 'huge'"):
        load_spec(str(bad))


def test_a_study_profiles_its_own_model_by_default():
    from tcnsearch.search import load_spec

    spec = load_spec("assoc-recall", "tiny")
    profile = spec.profile_spec()
    cfg = spec.base_config()
    assert profile.level == "model" and profile.model["d_model"] == cfg.model.d_model == profile.channels
    assert profile.build_model_config().arch == cfg.model.arch == "tcnca_simple"
    assert profile.batch == cfg.batch_size and profile.lengths == [cfg.seq_len]
    assert profile.threads == int(spec.budget.cpus_per_trial) == 1  # what a trial trains with
