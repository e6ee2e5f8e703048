"""mechscope.lab's NumPy attention and positional encoding against PyTorch's own implementations."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mechscope.lab import attention_np as A


def _t(x):
    return torch.from_numpy(np.asarray(x, dtype=np.float32))


@pytest.mark.parametrize("causal", [False, True])
def test_sdpa_equals_torch(causal):
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((2, 3, 7, 8)).astype(np.float32) for _ in range(3))  # (B, H, T, d)
    out, w = A.scaled_dot_product_attention(q, k, v, causal=causal)
    ref = F.scaled_dot_product_attention(_t(q), _t(k), _t(v), is_causal=causal)
    np.testing.assert_allclose(out, ref.numpy(), atol=2e-6, rtol=1e-5)
    np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-6)
    if causal:
        assert np.all(w[..., np.triu_indices(7, 1)[0], np.triu_indices(7, 1)[1]] == 0)


def test_sdpa_padding_mask_equals_torch():
    rng = np.random.default_rng(1)
    q = rng.standard_normal((2, 5, 4)).astype(np.float32)  # (B, Tq, d)
    k, v = (rng.standard_normal((2, 6, 4)).astype(np.float32) for _ in range(2))  # (B, Tk, d)
    mask = A.padding_mask([6, 3], 6)  # (B, 1, Tk)
    out, w = A.scaled_dot_product_attention(q, k, v, mask=mask)
    ref = F.scaled_dot_product_attention(_t(q), _t(k), _t(v), attn_mask=torch.from_numpy(mask))
    np.testing.assert_allclose(out, ref.numpy(), atol=2e-6, rtol=1e-5)
    assert np.all(w[1, :, 3:] == 0) and np.all(w[0] > 0)


@pytest.mark.parametrize("kind", ["self_causal", "cross_padding"])
def test_multi_head_attention_equals_nn_multihead(kind):
    torch.manual_seed(0)
    d, h = 12, 3
    mha = torch.nn.MultiheadAttention(d, h, batch_first=True).eval()
    with torch.no_grad():
        for p in mha.parameters():
            p.normal_(0, 0.4)  # biases too, so a missing bias would show
    x = torch.randn(2, 5, d)
    params = A.mha_params_from_torch(mha)
    if kind == "self_causal":
        ref, ref_w = mha(x, x, x, attn_mask=~torch.ones(5, 5, dtype=torch.bool).tril(), need_weights=True,
                         average_attn_weights=False)
        out, w = A.multi_head_attention(x.numpy(), x.numpy(), params, h, causal=True)
    else:
        mem = torch.randn(2, 7, d)
        pad = torch.tensor([[False] * 7, [False] * 4 + [True] * 3])  # torch: True = ignore this key
        ref, ref_w = mha(x, mem, mem, key_padding_mask=pad, need_weights=True, average_attn_weights=False)
        out, w = A.multi_head_attention(x.numpy(), mem.numpy(), params, h, mask=A.padding_mask([7, 4], 7))
    np.testing.assert_allclose(out, ref.detach().numpy(), atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(w, ref_w.detach().numpy(), atol=1e-6, rtol=1e-5)  # (B, H, Tq, Tk)


def test_sinusoidal_equals_marian_layout():
    from transformers.models.marian.modeling_marian import MarianSinusoidalPositionalEmbedding

    pe = A.sinusoidal_encoding(50, 16)
    ref = MarianSinusoidalPositionalEmbedding(50, 16).create_weight().numpy()  # sines first, then cosines
    np.testing.assert_allclose(pe[:, 0::2], ref[:, :8], atol=1e-6)
    np.testing.assert_allclose(pe[:, 1::2], ref[:, 8:], atol=1e-6)


def test_sinusoidal_properties():
    d = 32
    pe = A.sinusoidal_encoding(200, d)
    freqs = A.frequencies(d)
    for k in (0, 1, 5, 37):
        dots = np.array([pe[p] @ pe[p + k] for p in range(0, 150, 7)])
        np.testing.assert_allclose(dots, np.cos(k * freqs).sum(), atol=1e-9)  # depends only on k
        m = A.offset_rotation(k, d)
        np.testing.assert_allclose(pe[:-k or None] @ m, pe[k:], atol=1e-9)  # one rotation for every p
        np.testing.assert_allclose(m @ m.T, np.eye(d), atol=1e-12)  # orthogonal: a rotation
    assert pe[:, 1::2][0].tolist() == [1.0] * (d // 2)


def test_toy_attention_attends_to_repeats():
    words = "the cat sat on the mat".split()
    _, w = A.toy_self_attention(words)
    assert w.shape == (6, 6) and np.allclose(w.sum(-1), 1)
    assert w[4, 0] == pytest.approx(w[4, 4])  # "the" attends equally to both "the"s
    assert set(np.argmax(w, -1)[[0, 4]]) <= {0, 4}
