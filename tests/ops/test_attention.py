import math

import pytest
import torch

from tcnsearch.ops import (
    ChunkedAttention,
    RotaryRelativePositionalBias,
    SimpleRelativePositionalBias,
    chunked_attention,
    laplace,
)


def naive(q, k, v, chunk, causal, activation, bias, valid):
    """Per-chunk attention with explicit loops over batch and chunks and an explicit softmax."""
    batch, length, zdim = q.shape
    c = min(chunk, length)
    out = torch.zeros(batch, length, v.shape[-1], dtype=q.dtype)
    for b in range(batch):
        for start in range(0, length, c):
            idx = list(range(start, min(start + c, length)))
            n = len(idx)
            rel = bias(c)[:n, :n] if bias is not None else torch.zeros(n, n)
            allowed = valid[b, idx].unsqueeze(0).expand(n, n).clone()
            if causal:
                allowed &= torch.ones(n, n, dtype=torch.bool).tril()
            scores = q[b, idx] @ k[b, idx].T
            if activation == "softmax":
                s = scores / math.sqrt(zdim) + rel
                s = s.masked_fill(~allowed, float("-inf"))
                w = torch.exp(s - s.max(-1, keepdim=True).values)
                w = w / w.sum(-1, keepdim=True)
            else:
                w = laplace(scores / allowed.sum(-1, keepdim=True) + rel) * allowed
            out[b, idx] = w @ v[b, idx]
    return out


@pytest.mark.parametrize("activation", ["softmax", "laplace"])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("rel_pos", ["simple", "rotary", None])
@pytest.mark.parametrize("length,chunk", [(64, 16), (50, 16), (10, 32)])
def test_matches_naive_per_chunk(activation, causal, rel_pos, length, chunk):
    torch.manual_seed(length + chunk)
    att = ChunkedAttention(8, chunk, causal=causal, activation=activation, rel_pos=rel_pos)
    with torch.no_grad():
        for p in att.parameters():
            p.normal_()  # make the bias matter
    q, k, v = torch.randn(2, length, 8), torch.randn(2, length, 8), torch.randn(2, length, 5)
    valid = torch.ones(2, length, dtype=torch.bool)
    ref = naive(q, k, v, chunk, causal, activation, att.bias, valid)
    torch.testing.assert_close(att(q, k, v), ref, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("activation", ["softmax", "laplace"])
def test_key_padding(activation):
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 40, 8), torch.randn(2, 40, 8), torch.randn(2, 40, 4)
    mask = torch.zeros(2, 40, dtype=torch.bool)
    mask[0, 30:] = True
    mask[1, 12:] = True  # a whole chunk of padding for sample 1
    bias = SimpleRelativePositionalBias(16)
    out = chunked_attention(q, k, v, 16, activation=activation, bias=bias, key_padding_mask=mask)
    ref = naive(q, k, v, 16, False, activation, bias, ~mask)
    real = ~mask
    torch.testing.assert_close(out[real], ref[real], atol=1e-5, rtol=1e-4)
    assert torch.isfinite(out).all()
    v2 = v.clone()
    v2[mask] = 1e4  # values at padded keys never reach a real query
    out2 = chunked_attention(q, k, v2, 16, activation=activation, bias=bias, key_padding_mask=mask)
    torch.testing.assert_close(out2[real], out[real])


def test_full_attention_when_chunk_covers_sequence():
    torch.manual_seed(1)
    q, k, v = torch.randn(1, 30, 8), torch.randn(1, 30, 8), torch.randn(1, 30, 8)
    full = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(chunked_attention(q, k, v, 30, causal=True), full)
    torch.testing.assert_close(chunked_attention(q, k, v, 1000, causal=True), full)


def test_chunks_are_independent_and_causal():
    torch.manual_seed(2)
    q, k, v = (torch.randn(1, 48, 4, requires_grad=True) for _ in range(3))
    out = chunked_attention(q, k, v, 16, causal=True)
    out[0, 20].sum().backward()  # chunk 1 is positions 16..31
    for t in (q, k, v):
        touched = (t.grad[0].abs().sum(-1) > 0).nonzero().flatten().tolist()
        assert set(touched) <= set(range(16, 21))
    assert (v.grad[0].abs().sum(-1) > 0).nonzero().flatten().tolist() == list(range(16, 21))


def test_simple_bias_layout():
    bias = SimpleRelativePositionalBias(8)
    m = bias(5)
    for i in range(5):
        for j in range(5):
            assert m[i, j] == bias.rel_pos_bias[8 - 1 + j - i]
    with pytest.raises(ValueError):
        bias(9)


def test_rotary_bias_depends_on_offset_only():
    torch.manual_seed(3)
    bias = RotaryRelativePositionalBias(16, 32)
    with torch.no_grad():
        bias.alpha.normal_()
        bias.beta.normal_()
    m = bias(20)
    for off in range(-19, 20):
        d = torch.diagonal(m, offset=off)
        torch.testing.assert_close(d, d[0].expand_as(d), atol=1e-5, rtol=1e-4)
    assert not torch.allclose(torch.diagonal(m, 1)[0], torch.diagonal(m, -1)[0])


def test_bad_arguments():
    q = torch.randn(1, 4, 2)
    with pytest.raises(ValueError):
        chunked_attention(q, q, q, 0)
    with pytest.raises(ValueError):
        chunked_attention(q, q, q, 2, activation="relu2")
    with pytest.raises(ValueError):
        ChunkedAttention(3, 4, rel_pos="rotary")
