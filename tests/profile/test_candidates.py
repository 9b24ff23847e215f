import pytest
from pydantic import ValidationError

from tcnsearch.profile import ProfileSpec
from tcnsearch.structure import Structure


def test_grid_filtered_by_receptive_field():
    spec = ProfileSpec(lengths=[100, 1000], kernel_sizes=[3, 17], dilation_factors=[1, 4], depths=[2, 4],
                       per_block=[1, 2])
    got = spec.candidates()
    assert all(c.receptive_field >= 1000 for c in got)
    everything = [Structure(k, f, d, b) for k in (3, 17) for f in (1, 4) for d in (2, 4) for b in (1, 2)]
    assert set(got) == {c for c in everything if c.receptive_field >= 1000}
    assert Structure(17, 4, 4, 1) in got and Structure(3, 1, 2, 1) not in got


def test_receptive_field_rules():
    base = dict(lengths=[4096], kernel_sizes=[3], dilation_factors=[2], depths=[2, 12], per_block=[1])
    assert [c.depth for c in ProfileSpec(**base).candidates()] == [12]  # R >= 4096 needs depth 12
    assert [c.depth for c in ProfileSpec(**base, min_receptive_field=None).candidates()] == [2, 12]
    assert [c.depth for c in ProfileSpec(**base, min_receptive_field=7).candidates()] == [2, 12]
    assert [c.depth for c in ProfileSpec(**base, min_receptive_field=8).candidates()] == [12]


def test_defaults_cover_the_papers_structure():
    spec = ProfileSpec()
    assert Structure(17, 16, 4, 1) in spec.candidates()  # K=17, D=4, B=1, R >= the longest length


@pytest.mark.parametrize("bad", [dict(kernel_sizes=[1]), dict(dilation_factors=[0]), dict(depths=[0]),
                                 dict(per_block=[0]), dict(lengths=[0]), dict(lengths=[]), dict(channels=0),
                                 dict(mode="fast"), dict(dtype="int8"), dict(min_speedup=0),
                                 dict(min_receptive_field=0), dict(unknown=1)])
def test_bad_specs_rejected(bad):
    with pytest.raises(ValidationError):
        ProfileSpec(**bad)


def test_spec_from_a_study_file_with_flags_on_top(tmp_path):
    from tcnsearch.profile import make_spec

    study = tmp_path / "s.yaml"
    study.write_text("dataset: enwik8\nprofile:\n  lengths: [2048]\n  kernel_sizes: [5, 17]\n  mode: infer\n")
    spec = make_spec(study, lengths=[4096])
    assert spec.lengths == [4096] and spec.kernel_sizes == [5, 17] and spec.mode == "infer"
    bare = tmp_path / "bare.yaml"
    bare.write_text("depths: [3]\n")
    assert make_spec(bare).depths == [3]


@pytest.mark.parametrize("text,message", [
    ("profile:\n  kernel_sizes: [1]\n", "profile: kernel_sizes must be >= 2"),
    ("profile:\n  lenghts: [1024]\n", "profile.lenghts: Extra inputs are not permitted"),
    ("profile:\n  mode: fast\n", "profile.mode: Input should be 'train' or 'infer'"),
    ("profile: [1, 2]\n", "'profile' must be a mapping"),
    ("profile:\n  lengths: [1024\n", "not valid YAML at line"),
    ("- 1\n- 2\n", "expected a mapping"),
])
def test_malformed_study_file(tmp_path, text, message):
    from tcnsearch.errors import UserError
    from tcnsearch.profile import make_spec

    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(UserError) as err:
        make_spec(path)
    assert message in str(err.value) and str(path) in str(err.value) and "\n" not in str(err.value)
