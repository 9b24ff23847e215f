import math

import pytest
import torch

from tcnsearch.ops import MultiHeadEMA


def recurrence(x, p, q, beta, gamma, scale):
    """The EMA as its sequential recurrence. x (B, L, C); p, q, beta (C, N, 1); gamma (C, N)."""
    batch, length, channels = x.shape
    h = torch.zeros(batch, channels, p.shape[1], dtype=torch.float64)
    ys = []
    for t in range(length):
        h = (p * beta).squeeze(-1) * x[:, t, :, None] + q.squeeze(-1) * h
        ys.append((h * gamma * scale).sum(-1))
    return torch.stack(ys, 1)


def params(ema, rows):
    p, q = ema.coefficients()
    return [t[rows].double() for t in (p, q, ema.beta, ema.gamma)]


def test_causal_matches_recurrence():
    torch.manual_seed(0)
    ema = MultiHeadEMA(6, ndim=4)
    x = torch.randn(2, 50, 6)
    ref = recurrence(x.double(), *params(ema, slice(0, 6)), ema.scale)
    torch.testing.assert_close(ema(x).double(), ref, atol=1e-5, rtol=1e-4)


def test_bidirectional_matches_two_recurrences():
    torch.manual_seed(1)
    ema = MultiHeadEMA(5, ndim=3, bidirectional=True)
    x = torch.randn(2, 40, 5)
    fwd = recurrence(x.double(), *params(ema, slice(0, 5)), ema.scale)
    bwd = recurrence(x.double().flip(1), *params(ema, slice(5, 10)), ema.scale).flip(1)
    torch.testing.assert_close(ema(x).double(), fwd + bwd, atol=1e-5, rtol=1e-4)


def test_gradients_match_recurrence():
    torch.manual_seed(2)
    ema = MultiHeadEMA(3, ndim=2).double()
    x = torch.randn(1, 30, 3, dtype=torch.float64, requires_grad=True)
    p, q = ema.coefficients()
    ref = recurrence(x, p, q, ema.beta, ema.gamma, ema.scale)
    wrt = [x, ema.delta, ema.alpha, ema.beta, ema.gamma]
    g_ref = torch.autograd.grad(ref.square().sum(), wrt)
    g_fft = torch.autograd.grad(ema(x).square().sum(), wrt)
    for a, b in zip(g_fft, g_ref, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_step_matches_forward():
    torch.manual_seed(3)
    ema = MultiHeadEMA(4, ndim=8)
    x = torch.randn(3, 25, 4)
    h = ema.init_state(3)
    with torch.no_grad():
        ys = []
        for t in range(25):
            y, h = ema.step(x[:, t], h)
            ys.append(y)
    torch.testing.assert_close(torch.stack(ys, 1), ema(x), atol=1e-5, rtol=1e-4)


def test_megas_parameters_and_init():
    torch.manual_seed(4)
    ema = MultiHeadEMA(64, ndim=16, bidirectional=True)
    assert ema.delta.shape == ema.alpha.shape == ema.beta.shape == (128, 16, 1)
    assert ema.gamma.shape == (128, 16)
    assert ema.scale == pytest.approx(1 / math.sqrt(16))
    # beta: +1, -1, +1, ... over N, with small noise.
    mean = ema.beta.mean(0).flatten()
    assert torch.allclose(mean, torch.tensor([1.0, -1.0] * 8), atol=0.01)
    assert 0.15 < ema.delta.std() < 0.25 and 0.15 < ema.alpha.std() < 0.25
    assert 0.9 < ema.gamma.std() < 1.1


def test_kernel_is_regenerated_from_current_parameters():
    ema = MultiHeadEMA(2, ndim=2)
    k1 = ema.kernel(10)
    with torch.no_grad():
        ema.gamma.mul_(2)
    torch.testing.assert_close(ema.kernel(10), 2 * k1)


def test_padding_mask_zeroes_input():
    torch.manual_seed(5)
    ema = MultiHeadEMA(3, ndim=2)
    x = torch.randn(1, 20, 3)
    mask = torch.zeros(1, 20, dtype=torch.bool)
    mask[:, 15:] = True
    noisy = x.clone()
    noisy[:, 15:] = 1e3
    torch.testing.assert_close(ema(noisy, padding_mask=mask)[:, :15], ema(x)[:, :15])


def test_step_refuses_bidirectional():
    with pytest.raises(ValueError):
        MultiHeadEMA(2, bidirectional=True).init_state(1)


# -- truncation (MEGA's `truncation`: the kernel keeps min(T, L) taps) ----------------------------------


def windowed_recurrence(x, truncation, p, q, beta, gamma, scale):
    """The truncated EMA by brute force: output t restarts the recurrence at t-T+1, so inputs more
    than T-1 steps back weigh exactly zero (the kernel zeroed past T taps). x (B, L, C)."""
    return torch.stack([recurrence(x[:, max(0, t - truncation + 1) : t + 1], p, q, beta, gamma, scale)[:, -1]
                        for t in range(x.shape[1])], 1)


@pytest.mark.parametrize("truncation", [1, 7, 39])
def test_truncated_matches_windowed_recurrence(truncation):
    torch.manual_seed(6)
    ema = MultiHeadEMA(6, ndim=4, truncation=truncation)
    x = torch.randn(2, 40, 6)
    ref = windowed_recurrence(x.double(), truncation, *params(ema, slice(0, 6)), ema.scale)
    torch.testing.assert_close(ema(x).double(), ref, atol=1e-5, rtol=1e-4)
    assert ema.kernel_size(40) == truncation


def test_truncated_bidirectional_matches_two_windowed_recurrences():
    torch.manual_seed(7)
    ema = MultiHeadEMA(5, ndim=3, bidirectional=True, truncation=6)
    x = torch.randn(2, 30, 5)
    fwd = windowed_recurrence(x.double(), 6, *params(ema, slice(0, 5)), ema.scale)
    bwd = windowed_recurrence(x.double().flip(1), 6, *params(ema, slice(5, 10)), ema.scale).flip(1)
    torch.testing.assert_close(ema(x).double(), fwd + bwd, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_truncation_at_or_past_the_length_changes_nothing(bidirectional):
    torch.manual_seed(8)
    full = MultiHeadEMA(4, ndim=2, bidirectional=bidirectional)
    x = torch.randn(2, 20, 4)
    for truncation in (20, 50):
        cut = MultiHeadEMA(4, ndim=2, bidirectional=bidirectional, truncation=truncation)
        cut.load_state_dict(full.state_dict())
        assert cut.kernel_size(20) == 20
        torch.testing.assert_close(cut(x), full(x))


def test_truncated_step_matches_truncated_forward_not_the_full_recurrence():
    """Decoding reproduces the truncated model that was trained (MEGA's own step would not)."""
    torch.manual_seed(9)
    ema = MultiHeadEMA(4, ndim=8, truncation=5)
    x = torch.randn(3, 25, 4)
    state = ema.init_state(3)
    assert state.window.shape == (3, 5, 4)
    with torch.no_grad():
        ys = []
        for t in range(25):
            y, state = ema.step(x[:, t], state)
            ys.append(y)
        steps, forward = torch.stack(ys, 1), ema(x)
    torch.testing.assert_close(steps, forward, atol=1e-5, rtol=1e-4)
    untruncated = recurrence(x.double(), *params(ema, slice(0, 4)), ema.scale)
    assert not torch.allclose(steps[:, 5:].double(), untruncated[:, 5:], atol=1e-3)


@pytest.mark.parametrize("truncation", [0, -3])
def test_truncation_must_be_positive(truncation):
    with pytest.raises(ValueError, match="truncation"):
        MultiHeadEMA(2, truncation=truncation)
