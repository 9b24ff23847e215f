import os
import subprocess
import sys

import pytest
import torch

from tcnsearch.ops import TCN, dconv, receptive_field

BACKENDS = ["native", "torch"]


def naive_tcn(tcn: TCN, x: torch.Tensor) -> torch.Tensor:
    """The TCN as explicit loops over time and taps, sharing nothing with either backend."""
    act = {"relu": torch.relu, "identity": lambda z: z, "silu": torch.nn.functional.silu,
           "gelu": lambda z: torch.nn.functional.gelu(z, approximate="tanh")}[tcn.activation]
    batch, length, channels = x.shape
    K = tcn.kernel_size
    for i in range(tcn.depth):
        d = tcn.dilation_factor**i
        pad = (K - 1) * d if tcn.causal else (K - 1) * d // 2
        h = x
        for j in range(tcn.per_block):
            w = tcn.weight[i, j]
            z = torch.zeros_like(h)
            for t in range(length):
                for k in range(K):
                    s = t + k * d - pad
                    if 0 <= s < length:
                        z[:, t] += w[k] * h[:, s]
            h = act(z)
        x = x + h
    return x


def test_receptive_field_formula():
    assert receptive_field(17, 20, 4) == 1 + 16 * (20**4 - 1) // 19
    assert receptive_field(3, 2, 3, per_block=2) == 1 + 2 * 2 * 7
    assert receptive_field(5, 1, 3) == 1 + 4 * 3  # f = 1: no growth per block
    with pytest.raises(ValueError):
        receptive_field(0, 2, 3)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("K,f,D,B", [(3, 2, 3, 1), (4, 3, 2, 2), (5, 1, 2, 1)])
def test_output_depends_on_exactly_the_receptive_field(backend, causal, K, f, D, B):
    torch.manual_seed(0)
    tcn = TCN(6, K, f, D, per_block=B, causal=causal, activation="identity", backend=backend)
    with torch.no_grad():
        tcn.weight.uniform_(0.1, 1.0)  # positive taps: no accidental cancellation
    length, t = 80, 50
    x = torch.randn(1, length, 6, requires_grad=True)
    tcn(x)[0, t].sum().backward()
    seen = (x.grad[0].abs().sum(-1) > 0).nonzero().flatten().tolist()
    R = receptive_field(K, f, D, B)
    if causal:
        assert seen == list(range(t - R + 1, t + 1))
    else:
        left = sum(B * ((K - 1) * f**i // 2) for i in range(D))
        assert seen == list(range(t - left, t - left + R))


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("activation", ["relu", "gelu", "silu", "identity"])
@pytest.mark.parametrize("channels", [3, 8, 40, 67])
def test_backends_match_naive_loop(causal, activation, channels):
    torch.manual_seed(channels)
    ref = None
    x = torch.randn(2, 37, channels)
    for backend in BACKENDS:
        tcn = TCN(channels, 4, 3, 2, per_block=2, causal=causal, activation=activation, backend=backend)
        if ref is None:
            ref = naive_tcn(tcn, x)
            state = tcn.state_dict()
        tcn.load_state_dict(state)
        torch.testing.assert_close(tcn(x), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("B", [1, 2])
@pytest.mark.parametrize("shape", [(2, 300, 64), (1, 1000, 19), (3, 7, 33)])
def test_native_gradients_match_autograd_of_reference(causal, B, shape):
    torch.manual_seed(1)
    a = TCN(shape[-1], 5, 4, 3, per_block=B, causal=causal, activation="gelu", backend="native")
    b = TCN(shape[-1], 5, 4, 3, per_block=B, causal=causal, activation="gelu", backend="torch")
    b.load_state_dict(a.state_dict())
    x = torch.randn(*shape, requires_grad=True)
    g = torch.randn(shape)
    ga = torch.autograd.grad((a(x) * g).sum(), [x, a.weight])
    gb = torch.autograd.grad((b(x) * g).sum(), [x, b.weight])
    torch.testing.assert_close(ga[0], gb[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(ga[1], gb[1], atol=1e-4, rtol=1e-4)


def test_large_dilation_tiles_match_reference():
    # The paper's runtime structure: K=17, D=4, dilation factor raised until R >= L.
    torch.manual_seed(2)
    a = TCN(16, 17, 6, 4, backend="native")
    b = TCN(16, 17, 6, 4, backend="torch")
    b.load_state_dict(a.state_dict())
    x = torch.randn(1, 20000, 16, requires_grad=True)
    torch.testing.assert_close(a(x), b(x), atol=1e-5, rtol=1e-5)
    ga = torch.autograd.grad(a(x).sum(), [x, a.weight])
    gb = torch.autograd.grad(b(x).sum(), [x, b.weight])
    for u, v in zip(ga, gb, strict=True):
        torch.testing.assert_close(u, v, atol=2e-3, rtol=1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("K", [2, 3, 4])
def test_dilations_far_past_the_length_match_naive_loop(backend, causal, K):
    # f = 16, D = 9 dilates the last block by 16^8 > 2^31: most taps read only padding. Before, the
    # native kernel's work grew with the dilation (and the int overflowed) and the PyTorch path
    # padded (K-1)*dilation rows.
    torch.manual_seed(K)
    tcn = TCN(5, K, 16, 9, per_block=2, causal=causal, activation="gelu", backend=backend)
    x = torch.randn(2, 40, 5, requires_grad=True)
    y = tcn(x)
    torch.testing.assert_close(y, naive_tcn(tcn, x), atol=1e-5, rtol=1e-5)
    reference = TCN(5, K, 16, 9, per_block=2, causal=causal, activation="gelu", backend="torch")
    reference.load_state_dict(tcn.state_dict())
    g = torch.randn_like(y)
    got = torch.autograd.grad((y * g).sum(), [x, tcn.weight])
    want = torch.autograd.grad((naive_tcn(reference, x) * g).sum(), [x, reference.weight])
    for u, v in zip(got, want, strict=True):
        torch.testing.assert_close(u, v, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_dropout_only_in_training(backend):
    tcn = TCN(8, 3, 2, 2, dropout=0.5, backend=backend)
    x = torch.randn(2, 50, 8)
    tcn.eval()
    torch.testing.assert_close(tcn(x), tcn(x))
    tcn.train()
    assert not torch.allclose(tcn(x), tcn(x))


@pytest.mark.parametrize("backend", BACKENDS)
def test_padding_does_not_leak_into_real_positions(backend):
    torch.manual_seed(3)
    tcn = TCN(8, 3, 2, 3, causal=False, backend=backend)
    x = torch.randn(1, 30, 8)
    padded = torch.cat([x, 100 * torch.randn(1, 10, 8)], dim=1)
    mask = torch.zeros(1, 40, dtype=torch.bool)
    mask[:, 30:] = True
    out = tcn(padded, padding_mask=mask)
    torch.testing.assert_close(out[:, :30], tcn(x), atol=1e-5, rtol=1e-5)
    assert out[:, 30:].abs().max() == 0


@pytest.mark.parametrize("B", [1, 2])
def test_streaming_equals_causal_forward(B):
    torch.manual_seed(4)
    tcn = TCN(12, 5, 3, 3, per_block=B, activation="gelu")
    x = torch.randn(2, 120, 12)
    full = tcn(x)
    state = tcn.init_state(batch=2)
    sizes = [buf.shape for buf in state.buffers]
    with torch.no_grad():
        steps = []
        for t in range(x.shape[1]):
            y, state = tcn.step(x[:, t], state)
            steps.append(y)
    torch.testing.assert_close(torch.stack(steps, 1), full, atol=1e-5, rtol=1e-5)
    # Constant memory per token: the buffers never grow, whatever the sequence length.
    assert [buf.shape for buf in state.buffers] == sizes
    assert all(s[1] == (5 - 1) * 3**i + 1 for s, i in zip(sizes, [i for i in range(3) for _ in range(B)], strict=True))


def test_step_refuses_non_causal():
    with pytest.raises(ValueError, match="causal"):
        TCN(4, 3, 2, 2, causal=False).init_state(1)


@pytest.mark.parametrize("kwargs", [dict(kernel_size=1), dict(dilation_factor=0), dict(depth=0),
                                    dict(activation="tanh"), dict(backend="cuda")])
def test_bad_arguments(kwargs):
    args = dict(channels=4, kernel_size=3, dilation_factor=2, depth=2) | kwargs
    with pytest.raises(ValueError):
        TCN(**args)


def test_native_refuses_other_dtypes():
    with pytest.raises(ValueError, match="float32"):
        TCN(4, 3, 2, 2, backend="native")(torch.randn(1, 10, 4, dtype=torch.float64))


def test_auto_uses_torch_for_float64():
    tcn = TCN(4, 3, 2, 2).double()
    x = torch.randn(1, 20, 4, dtype=torch.float64)
    assert tcn(x).dtype == torch.float64


def test_kernel_is_cached_and_fallback_without_compiler(tmp_path):
    assert dconv.available()
    assert dconv.library_path().exists()
    # A machine without a C compiler: the TCN still works, on the reference path, with a warning.
    code = (
        "import torch, logging; logging.basicConfig();"
        "from tcnsearch.ops import TCN; from tcnsearch.ops import dconv;"
        "y = TCN(4, 3, 2, 2)(torch.randn(1, 10, 4)); print(dconv.available(), tuple(y.shape))"
    )
    env = dict(os.environ, TCNSEARCH_CACHE=str(tmp_path), CC="/nonexistent/cc", PATH="/nonexistent")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False (1, 10, 4)"
    assert "native TCN kernel unavailable" in out.stderr
