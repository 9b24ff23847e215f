import pytest
import torch

from tcnsearch.data import IGNORE, associative_recall


@pytest.mark.parametrize("seq_len", [64, 65, 3])
def test_answer_is_the_value_bound_to_the_query(seq_len):
    x, y = associative_recall(200, seq_len=seq_len, vocab_size=20, seed=1)
    assert x.shape == y.shape == (200, seq_len)
    assert (y[:, :-1] == IGNORE).all()
    for seq, target in zip(x.tolist(), y[:, -1].tolist(), strict=True):
        body = seq[seq_len - 1 - 2 * ((seq_len - 1) // 2):-1]
        bound = {}
        for k, v in zip(body[0::2], body[1::2], strict=True):
            assert k < 10 <= v < 20
            assert bound.setdefault(k, v) == v  # one mapping per sequence
        assert bound[seq[-1]] == target


def test_seeded_and_fresh_mappings():
    a, _ = associative_recall(50, seed=3)
    b, _ = associative_recall(50, seed=3)
    c, _ = associative_recall(50, seed=4)
    assert torch.equal(a, b) and not torch.equal(a, c)
    # different sequences bind the same key to different values
    _, y = associative_recall(2000, seq_len=5, vocab_size=20, seed=0)
    x, _ = associative_recall(2000, seq_len=5, vocab_size=20, seed=0)
    answers_for_key0 = {v for k, v in zip(x[:, -1].tolist(), y[:, -1].tolist(), strict=True) if k == 0}
    assert len(answers_for_key0) > 5


def test_bad_arguments():
    with pytest.raises(ValueError):
        associative_recall(1, seq_len=2)
    with pytest.raises(ValueError):
        associative_recall(1, vocab_size=3)
