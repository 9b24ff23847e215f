"""Bad input, as a careless or hostile user gives it: every case exits 2 with one line, no traceback,
and leaves every file it was pointed at byte-for-byte as it was (and creates none).

The cases share one folder of real files (a study database, another application's SQLite file, a
file that is not a database, malformed study files, data archives, checkpoints, one of them crafted
to run code on unpickling); each case hashes the whole folder before and after.
"""

import hashlib
import json
import os
import sqlite3
import tarfile
import zipfile
import zlib
from pathlib import Path

import optuna
import pytest
import torch
import yaml

from tcnsearch.cli import main
from tcnsearch.compat import optuna as compat
from tests.data.test_archives import make_tar, member, patch_declared, zeros_zip
from tests.search.conftest import SMALL, finished_study

PG_DOWN = "postgresql+psycopg://user:s3cret-pw@127.0.0.1:1/db"


class _Planted:
    """Unpickling this runs a shell command (that is what weights_only=False would allow)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _study(doc) -> str:
    return yaml.safe_dump(doc)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    optuna.create_study(study_name="kept", storage=f"sqlite:///{root / 'tcnsearch.db'}").optimize(
        lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    optuna.create_study(study_name="kept-max", direction="maximize", storage=f"sqlite:///{root / 'tcnsearch.db'}")
    older = optuna.create_study(study_name="assoc-recall-tiny", storage=f"sqlite:///{root / 'tcnsearch.db'}")
    older.set_user_attr("survivors", [{"label": "K3-f2-D3-B1", "choices": {}}])  # as tcnsearch 0.1 stored them
    older.tell(older.ask(), 1.0)
    with sqlite3.connect(root / "other.db") as conn:  # another application's database
        conn.execute("CREATE TABLE invoices (id INTEGER, total REAL)")
        conn.execute("INSERT INTO invoices VALUES (1, 9.5)")
    (root / "junk.db").write_bytes(os.urandom(4096))
    # tcnsearch studies to export, promote and train from: #1 best, #0 COMPLETE, #2 FAIL, #3 PRUNED
    _, picked = finished_study(root, f"sqlite:///{root / 'tcnsearch.db'}", name="picked")
    _, pareto = finished_study(root, f"sqlite:///{root / 'tcnsearch.db'}", directions=("minimize", "minimize"),
                               name="pareto")
    artifacts = root / "tcnsearch-artifacts"  # where the study's kept weights are by default
    artifacts.mkdir()
    torch.save({"model": _Planted(root / "PLANTED"), "config": {}}, artifacts / "crafted")
    torch.save({"something": "else"}, artifacts / "foreign")
    for trial, artifact_id in ((picked.trials[1], "crafted"), (picked.trials[0], "foreign")):
        compat.set_system_attr(picked, f"dashboard:artifacts:{trial._trial_id}:{artifact_id}",
                               json.dumps({"artifact_id": artifact_id, "filename": "final.pt"}))
    for study in (picked, pareto):  # tcnsearch's storage left the file in WAL mode: close it, back to one file
        compat.storage_of(study)._backend.engine.dispose()
    with sqlite3.connect(root / "tcnsearch.db") as conn:
        conn.execute("PRAGMA journal_mode=DELETE")
    studies = root / "studies"
    studies.mkdir()
    (studies / "bad-yaml.yaml").write_text("task: [assoc-recall\n")
    (studies / "not-utf8.yaml").write_bytes(b"task: assoc-recall\n\xff\xfe\x00name: x\n")
    (studies / "nan-range.yaml").write_text(_study(SMALL | {"space": {"lr": {"low": 1e-3, "high": 1e-2}}})
                                            .replace("0.01", ".nan"))
    (studies / "inf-range.yaml").write_text(_study(SMALL | {"space": {"lr": {"low": 1e-3, "high": 1e-2}}})
                                            .replace("0.01", ".inf"))
    (studies / "unknown-key.yaml").write_text(_study(SMALL | {"bugdet": {"trials": 2}}))
    (studies / "bad-name.yaml").write_text(_study(SMALL | {"name": "../../escaped"}))
    (studies / "list.yaml").write_text("- task\n- assoc-recall\n")
    (studies / "bad-task.yaml").write_text(_study(SMALL | {"task": "../../etc"}))
    (studies / "bad-level.yaml").write_text(_study(SMALL | {"profile": {"level": "kernel"}}))
    (studies / "tagged.yaml").write_text("task: !!python/object/apply:os.system ['echo hi']\n")
    (studies / "sampler-option.yaml").write_text(_study(SMALL | {"sampler": {"type": "random", "multivariate": True}}))
    (studies / "sampler-default.yaml").write_text(_study(SMALL | {"sampler": {"constant_liar": False}}))
    (studies / "sampler-unknown.yaml").write_text(_study(SMALL | {"sampler": {"type": "cmaes"}}))
    (studies / "grid-range.yaml").write_text(_study(SMALL | {"sampler": {"type": "grid"}}))
    (studies / "budget-zero.yaml").write_text(_study(SMALL | {"objective": {"metric": "loss", "max_latency_ms": 0}}))
    (studies / "a-folder.yaml").mkdir()
    (studies / "too-wide.yaml").write_text(_study(SMALL | {"space": {"model.d_model": {"choices": [16, 200000]}}}))
    data = root / "data"
    data.mkdir()
    (data / "passwd.txt").write_text("root:x:0:0:root:/root:/bin/bash\n" * 30)
    with zipfile.ZipFile(data / "nomember.zip", "w") as zf:
        zf.writestr("readme.txt", "not enwik8")
    (data / "broken.zip").write_bytes(b"PK\x03\x04" + os.urandom(200))
    (data / "folder").mkdir()
    # hostile archives: a bomb, a member that inflates past its claim, names outside, a link
    zeros_zip(data / "bomb.zip", 20)
    with zipfile.ZipFile(data / "liar.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("enwik8", b"abc" * 100_000)
    patch_declared(data / "liar.zip", 1000, crc=zlib.crc32((b"abc" * 334)[:1000]))
    with zipfile.ZipFile(data / "escape.zip", "w") as zf:
        zf.writestr("enwik8", b"x" * 100)
        zf.writestr("../../escaped", b"x")
    make_tar(data / "link.tar.gz", [(member("cifar-10-batches-bin/test_batch.bin", tarfile.SYMTYPE,
                                            linkname="/etc/passwd"), None)])
    make_tar(data / "escape.tar", [(member("/tmp/listops-1000/basic_train.tsv"), b"Source\tTarget\n")], mode="w")
    make_tar(data / "bomb.tar.gz", [(member("aclImdb/train/pos/0_9.txt"), bytes(20 << 20))])
    ckpt = root / "ckpt"
    ckpt.mkdir()
    torch.save({"model": _Planted(root / "PLANTED"), "optimizer": {}, "scheduler": {}, "sampler": None, "step": 0,
                "history": []}, ckpt / "planted.pt")
    (ckpt / "text.pt").write_text("just text")
    torch.save({"model": {}}, ckpt / "partial.pt")
    torch.save([1, 2, 3], ckpt / "list.pt")
    return root


def _snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir")
            for p in sorted(root.rglob("*"))}


CASES = [
    # profile: flags
    (["profile", "--gpu", "x900"], "unknown GPU"),
    (["profile", "--gpu", "V100"], "no V100 on this machine"),
    (["profile", "--gpu", "v100", "--ray-address", "127.0.0.1:1"], "cannot reach the Ray cluster"),
    (["profile", "--kernel-sizes", "1"], "kernel_sizes must be >= 2"),
    (["profile", "--kernel-sizes", "a,b"], "expected comma-separated integers"),
    (["profile", "--lengths", "0"], "lengths must be >= 1"),
    (["profile", "--lengths", "99999999999"], "lengths must be <= "),
    (["profile", "--lengths", "4096", "--channels", "100000", "--batch", "100000"], "at most 2^31"),
    (["profile", "--lengths", "4194304", "--channels", "512"], "the profile needs ~"),
    (["profile", "--kernel-sizes", ",".join(map(str, range(2, 1002))), "--dilation-factors",
      ",".join(map(str, range(1, 1001)))], "the grid has 10,000,000 candidates, more than 10,000"),
    (["profile", "--max-candidates", "0"], "max_candidates"),
    (["profile", "--dilation-factors", "0"], "dilation_factors must be >= 1"),
    (["profile", "--depths", "0"], "depths must be >= 1"),
    (["profile", "--depths", "1000"], "depths must be <= 64"),
    (["profile", "--per-block", "0"], "per_block must be >= 1"),
    (["profile", "--min-speedup", "nan"], "finite number"),
    (["profile", "--min-speedup", "inf"], "finite number"),
    (["profile", "--min-speedup", "-1"], "greater than 0"),
    (["profile", "--precision", "0"], "greater than 0"),
    (["profile", "--precision", "nan"], "finite number"),
    (["profile", "--max-time", "inf"], "finite number"),
    (["profile", "--max-time", "-1"], "greater than 0"),
    (["profile", "--min-pairs", "1"], "min_pairs"),
    (["profile", "--threads", "0"], "threads"),
    (["profile", "--channels", "0"], "channels"),
    (["profile", "--batch", "0"], "batch"),
    (["profile", "--ema-dim", "0"], "ema_dim"),
    (["profile", "--level", "kernel"], "Invalid value for '--level'"),
    (["profile", "--mode", "fast"], "Invalid value for '--mode'"),
    (["profile", "--undecided", "maybe"], "Invalid value for '--undecided'"),
    (["profile", "--strategy", "greedy"], "Invalid value for '--strategy'"),
    (["profile", "--dtype", "float64"], "Invalid value for '--dtype'"),
    (["profile", "--min-receptive-field", "abc"], "expected a number"),
    (["profile", "--min-receptive-field", "100000000", "--lengths", "64"], "no candidate reaches"),
    (["profile", "--predict"], "nothing to predict from"),
    (["profile", "--predict", "--storage", "sqlite:///missing.db"], "nothing to predict from"),
    (["profile", "--list", "--storage", "sqlite:///missing.db"], "no database at missing.db"),
    (["profile", "--study", "studies/bad-yaml.yaml"], "not valid YAML"),
    (["profile", "--study", "studies/missing.yaml"], "cannot read"),
    (["profile", "--study", "studies/bad-level.yaml"], "profile.level"),
    # storage URLs, as flags and from the environment
    (["profile", "--storage", "sqlite:///junk.db"], "is not an SQLite database"),
    (["profile", "--storage", "sqlite:///studies"], "is a folder"),
    (["profile", "--storage", "no-such-scheme"], "is not a database URL"),
    (["profile", "--storage", "mysql+nodriver://u@h/db"], "unsupported database driver"),
    (["profile", "--storage", PG_DOWN], "cannot reach the database"),
    (["profile", "--storage", "postgresql+psycopg://u:s3cret-pw@127.0.0.1:99999/db"], "port 99999 is out of range"),
    (["profile", "--storage", "postgresql+psycopg://u@127.0.0.1:abc/db"], "is not a database URL"),
    (["profile", "--storage", "postgresql+psycopg://u@127.0.0.1:1/db?password=s3cret-pw"], "password=***"),
    (["report", "kept"], "no database at", {"TCNSEARCH_STORAGE": "sqlite:///missing.db"}),
    (["study", "assoc-recall"], "cannot reach the database", {"TCNSEARCH_STORAGE": PG_DOWN}),
    # study: names, files, flags
    (["study", "nope"], "unknown study 'nope'"),
    (["study", "studies/bad-yaml.yaml"], "not valid YAML"),
    (["study", "studies/not-utf8.yaml"], "not a text file"),
    (["study", "studies/nan-range.yaml"], "finite number"),
    (["study", "studies/inf-range.yaml"], "finite number"),
    (["study", "studies/unknown-key.yaml"], "bugdet"),
    (["study", "studies/bad-name.yaml"], "is not a usable study name"),
    (["study", "studies/list.yaml"], "expected a mapping"),
    (["study", "studies/bad-task.yaml"], "unknown task"),
    (["study", "studies/tagged.yaml"], "not valid YAML"),
    (["study", "studies/a-folder.yaml"], "not found"),
    (["study", "assoc-recall", "--study-name", ""], "is not a usable name"),
    (["study", "assoc-recall", "--study-name", "../../escaped"], "is not a usable name"),
    (["study", "assoc-recall", "--gpu", "v100"], "no V100 on this machine"),
    (["study", "assoc-recall", "--gpu", "x900"], "unknown GPU"),
    (["study", "assoc-recall", "--preset", "huge"], "Invalid value for '--preset'"),
    (["study", "assoc-recall", "--trials", "0"], "Invalid value for '--trials'"),
    (["study", "assoc-recall", "--max-concurrent", "0"], "Invalid value for '--max-concurrent'"),
    (["study", "assoc-recall", "--storage", "sqlite:///junk.db"], "is not an SQLite database"),
    (["study", "assoc-recall", "--storage", "sqlite:///other.db", "--gpu", "h100"], "no H100 on this machine"),
    (["study", "studies/sampler-option.yaml"], "multivariate is not an option of the random sampler"),
    (["study", "studies/sampler-default.yaml"], "constant_liar is not an option of the gp sampler (it takes "
                                                "n_startup_trials, seed); constant_liar belongs to type: tpe"),
    (["study", "studies/sampler-unknown.yaml"], "sampler.type"),
    (["study", "studies/grid-range.yaml"], "the grid sampler needs choices"),
    (["study", "studies/budget-zero.yaml"], "objective.max_latency_ms"),
    (["study", "studies/too-wide.yaml"], "the largest trial (model.d_model=200000"),
    (["study", "assoc-recall", "--sampler", "cmaes"], "Invalid value for '--sampler'"),
    (["study", "assoc-recall", "--enqueue", "5,4"], "give 'paper' or a structure as K,f,D,B"),
    (["study", "assoc-recall", "--warm-start", "nope"], "--warm-start 'nope': no such study"),
    (["study", "assoc-recall", "--resume"], "'assoc-recall-tiny' was created by an earlier tcnsearch"),
    (["study", "assoc-recall", "--study-name", "kept", "--resume"], "'kept' was not created by tcnsearch study"),
    (["study", "assoc-recall"], "'assoc-recall-tiny' already holds 1 trials; --resume continues it"),
    (["study", "assoc-recall", "--warm-start", "kept-max"], "warm-start from a study with the same objective"),
    (["study", "assoc-recall", "--warm-start", "kept", "--storage", "sqlite:///missing.db"], "no such study"),
    (["study", "lra-image"], "lra-image needs its data"),
    (["study", "enwik8", "--data", "data/missing.zip"], "no data set at"),
    (["study", "enwik8", "--data", "data/folder"], "is a folder"),
    (["study", "enwik8", "--data", "data/nomember.zip"], "has no 'enwik8' member"),
    # train: tasks, --set values, data, checkpoints
    (["train", "nope"], "unknown task"),
    (["train", "assoc-recall", "--preset", "huge"], "Invalid value for '--preset'"),
    (["train", "assoc-recall", "--steps", "0"], "Invalid value for '--steps'"),
    (["train", "assoc-recall", "--set", "lr=nan"], "lr: Input should be a finite number"),
    (["train", "assoc-recall", "--set", "lr=-inf"], "lr: Input should be a finite number"),
    (["train", "assoc-recall", "--set", "lr=!!python/object/apply:os.system ['touch PLANTED']"],
     "is not a plain YAML value"),
    (["train", "assoc-recall", "--set", "device=bogus"], "is not a device"),
    (["train", "assoc-recall", "--set", "device=cuda"], "no CUDA device"),
    (["train", "assoc-recall", "--set", "no_such_key=1"], "no_such_key"),
    (["train", "assoc-recall", "--set", "=1"], "--set takes key=value"),
    (["train", "assoc-recall", "--set", "lr"], "--set takes key=value"),
    (["train", "assoc-recall", "--set", "model.dropout=1.5"], "model.dropout"),
    (["train", "assoc-recall", "--set", "model.activation_dropout=1.5"], "model.activation_dropout"),
    (["train", "assoc-recall", "--set", "model.ema_truncation=0"], "model.ema_truncation"),
    (["train", "assoc-recall", "--set", "steps=0"], "steps"),
    (["train", "assoc-recall", "--set", "model.d_model=200000"], "the model needs ~"),
    (["train", "assoc-recall", "--set", "seq_len=100000000"], "(its data set ~"),
    (["train", "assoc-recall", "--set", "micro_batch=0"], "micro_batch"),
    (["train", "assoc-recall", "--resume"], "--resume needs --checkpoint"),
    (["train", "assoc-recall", "--checkpoint", "ckpt/planted.pt", "--resume"], "not a loadable tcnsearch checkpoint"),
    (["train", "assoc-recall", "--checkpoint", "ckpt/text.pt", "--resume"], "not a loadable tcnsearch checkpoint"),
    (["train", "assoc-recall", "--checkpoint", "ckpt/partial.pt", "--resume"], "not a tcnsearch checkpoint"),
    (["train", "assoc-recall", "--checkpoint", "ckpt/list.pt", "--resume"], "not a tcnsearch checkpoint"),
    (["train", "enwik8", "--data", "data/passwd.txt"], "too small for this run's splits"),
    (["train", "enwik8", "--data", "data/nomember.zip"], "has no 'enwik8' member"),
    (["train", "enwik8", "--data", "data/broken.zip"], "cannot be read"),
    (["train", "enwik8", "--data", "data/folder"], "is a folder"),
    (["train", "enwik8", "--data", "data/bomb.zip"], "a zip bomb"),
    (["train", "enwik8", "--data", "data/escape.zip"], "would land outside"),
    (["study", "enwik8", "--data", "data/liar.zip"], "inflates beyond the 1,000 bytes it declares"),
    (["train", "lra-image", "--data", "data/link.tar.gz"], "is a link"),
    (["study", "lra-text", "--data", "data/bomb.tar.gz"], "a zip bomb"),
    # report and dashboard: reading commands create nothing
    (["report", "nope"], "no study 'nope'"),
    (["report", "kept", "--storage", "sqlite:///missing.db"], "no database at missing.db"),
    (["report", "kept", "--storage", "sqlite:///other.db"], "holds no Optuna studies"),
    (["report", "kept", "--storage", "sqlite:///junk.db"], "is not an SQLite database"),
    (["dashboard", "--storage", "sqlite:///missing.db"], "no database at missing.db"),
    (["dashboard", "--storage", "sqlite:///other.db"], "holds no Optuna studies"),
    (["dashboard", "--port", "0"], "Invalid value for '--port'"),
    # data
    (["data", "prepare", "enwik8", "--data", "data/folder"], "is a folder"),
    (["data", "prepare", "enwik8", "--data", "data/nomember.zip"], "has no 'enwik8' member"),
    (["data", "prepare", "enwik8", "--data", "data/broken.zip"], "cannot be read"),
    (["data", "prepare", "enwik8", "--data", "data/missing.zip"], "no data set at"),
    (["data", "prepare", "enwik8", "--data", "data/liar.zip"], "inflates beyond"),
    (["data", "prepare", "lra-listops", "--data", "data/escape.tar"], "would land outside"),
    (["data", "prepare", "lra-image", "--data", "data/passwd.txt"], "neither a folder nor a tar"),
    (["data", "download", "nope"], "Invalid value for '{enwik8}'"),
    (["data", "generate", "assoc-recall", "--out", "x.pt", "--examples", "0"], "Invalid value for '--examples'"),
    # export, promote and train's pick: studies, trials, artifacts
    (["export", "nope"], "no study 'nope'"),
    (["export", "picked", "--trial", "9"], "has no trial 9"),
    (["export", "picked", "--trial", "2"], "did not finish its training (FAIL)"),
    (["export", "picked", "--trial", "3"], "did not finish its training (PRUNED)"),
    (["export", "pareto"], "choose a trial of its Pareto front with --trial N"),
    (["export", "kept"], "does not store the study file"),
    (["export", "picked", "--out", "studies/a-folder.yaml"], "is a directory"),
    (["export", "picked", "--storage", "sqlite:///missing.db"], "no database at missing.db"),
    (["promote", "nope"], "no study 'nope'"),
    (["promote", "picked", "--top", "0"], "Invalid value for '--top'"),
    (["promote", "picked", "--top", "1"], "Invalid value for '--top'"),
    (["promote", "picked", "--preset", "huge"], "Invalid value for '--preset'"),
    (["promote", "picked", "--steps", "0"], "Invalid value for '--steps'"),
    (["promote", "kept"], "was not created by tcnsearch study"),
    (["promote", "picked", "--top", "2", "--artifacts", "studies/list.yaml"], "is a file, not a folder"),
    (["promote", "picked", "--top", "2", "--artifacts", "studies/list.yaml/in"], "is not a writable folder"),
    (["promote", "picked", "--top", "2", "--data", "data/missing.zip"], "not found"),
    (["study", "assoc-recall", "--study-name", "fresh", "--artifacts", "studies/list.yaml"], "is a file, not a folder"),
    (["study", "assoc-recall", "--study-name", "fresh", "--artifacts", "studies/list.yaml/x"], "not a writable folder"),
    (["dashboard", "--artifacts", "studies/list.yaml"], "is a file, not a folder"),
    (["train", "assoc-recall", "--from-study", "nope"], "no study 'nope'"),
    (["train", "assoc-recall", "--from-study", "picked", "--trial", "2"], "did not finish its training"),
    (["train", "assoc-recall", "--from-study", "picked", "--trial", "9"], "has no trial 9"),
    (["train", "assoc-recall", "--from-study", "pareto"], "choose a trial of its Pareto front"),
    (["train", "enwik8", "--from-study", "picked"], "is for task 'assoc-recall', not 'enwik8'"),
    (["train", "assoc-recall", "--from-study", "picked", "--trial", "1", "--init-from-artifact"],
     "not tcnsearch weights"),
    (["train", "assoc-recall", "--from-study", "picked", "--trial", "0", "--init-from-artifact"],
     "expected the model's state and its config"),
    (["train", "assoc-recall", "--from-study", "picked", "--init-from-artifact", "--artifacts", "data/folder"],
     "not in the artifact store"),
    (["train", "assoc-recall", "--from-study", "picked", "--init-from-artifact", "--artifacts", "absent"],
     "no such folder"),
    (["train", "assoc-recall", "--config", "studies/list.yaml"], "not an exported training config"),
    (["train", "assoc-recall", "--config", "studies/missing.yaml"], "cannot read"),
    (["train", "assoc-recall", "--config", "studies/list.yaml", "--from-study", "picked"], "not both"),
    (["train", "assoc-recall", "--trial", "1"], "need --config FILE or --from-study STUDY"),
    (["report", "picked", "nope"], "no study 'nope'"),
    # the command line itself
    (["--no-such-flag"], "No such option"),
    (["no-such-command"], "No such command"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: " ".join(c[0])[:70])
def test_bad_input_exits_2_with_one_line_and_changes_nothing(case, world, capsys, monkeypatch):
    args, message, env = (*case, {})[:3]
    monkeypatch.chdir(world)
    monkeypatch.delenv("TCNSEARCH_STORAGE", raising=False)
    monkeypatch.setenv("TCNSEARCH_DATA", str(world / "data" / "cache"))  # a cache that must stay absent
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    before = _snapshot(world)
    code = main(args)
    out, err = capsys.readouterr()
    assert code == 2, (code, err[-500:])
    assert message in err, err
    assert err.count("\n") <= 2 and "Traceback" not in err + out
    assert "s3cret-pw" not in err + out  # a password never reaches an output
    assert _snapshot(world) == before  # no file changed, none created (no -wal, no cache entry, no report)


def test_every_command_has_its_bad_inputs_and_the_readme_counts_them():
    from tcnsearch.cli import cli

    covered = {case[0][0] for case in CASES}
    assert set(cli.commands) <= covered, set(cli.commands) - covered
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert f"**{len(CASES)} bad inputs**" in readme  # the figure the README gives is this suite's


def test_a_read_only_database_is_refused_before_anything_is_measured(pg_url, capsys):
    """A standby (or a database set read-only) is found at once, not after minutes of profiling."""
    import psycopg

    from tests.conftest import PG_ADMIN

    name = pg_url.rsplit("/", 1)[1]
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
    try:
        assert main(["profile", "--storage", pg_url, "--lengths", "64", "--kernel-sizes", "3"]) == 2
        err = capsys.readouterr().err
        assert "is read-only" in err and err.count("\n") == 1
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{name}" RESET default_transaction_read_only')


def test_an_empty_evaluation_set_is_an_error_not_a_score():
    from tcnsearch.errors import UserError
    from tcnsearch.models import ModelConfig, build_model
    from tcnsearch.train import evaluate

    model = build_model(ModelConfig(d_model=8, vocab_size=16, task="lm", chunk_size=8))
    with pytest.raises(UserError, match="the evaluation set is empty"):
        evaluate(model, iter([]))


def test_a_stored_study_name_never_leaves_the_report_folder(tmp_path, monkeypatch, capsys):
    """A name read back from a database (someone else's, say) becomes a safe file name."""
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    optuna.create_study(study_name="../../escaped", storage=url).optimize(lambda t: t.suggest_float("x", 0, 1),
                                                                         n_trials=2)
    assert main(["report", "../../escaped", "--storage", url]) == 0
    written = [p for p in tmp_path.rglob("*.html")]
    assert [p.relative_to(tmp_path).as_posix() for p in written] == ["dashboards/study-escaped.html"]
    assert not (tmp_path.parent.parent / "escaped.html").exists()
