"""q / k / v, their rotations and the attention scores, on tiny random models of every family, against
computations written here from the HF weights (literal module names, not mechscope's adapters)."""
import pytest
import torch
import torch.nn.functional as F

from mechscope import MechscopeError

from conftest import ALL_FAMILIES, tiny

PROMPTS = ["The quick brown fox jumps", "Hi!", "A longer prompt, with punctuation."]
ROTARY = ("llama", "mistral", "qwen2", "phi3", "gpt_neox", "gpt_neox_seq")

# where each family's attention module sits and how its projections are laid out, written out independently
HF_ATTN = {
    "gpt2": "transformer.h.{L}.attn", "llama": "model.layers.{L}.self_attn", "mistral": "model.layers.{L}.self_attn",
    "qwen2": "model.layers.{L}.self_attn", "phi3": "model.layers.{L}.self_attn",
    "gpt_neox": "gpt_neox.layers.{L}.attention", "gpt_neox_seq": "gpt_neox.layers.{L}.attention",
    "bert": "bert.encoder.layer.{L}.attention.self",
}


def sites(m, layer, scores=True):
    kinds = ["q", "k", "v"] + (["rot_q", "rot_k"] if m.cfg.family in ROTARY else []) + (["attn_scores"] * scores)
    return [f"blocks.{layer}.attn.hook_{k}" for k in kinds]


def qkv_reference(m, family, attn, x):
    """q (B, T, H, D), k and v (B, T, H_kv, D) from the attention module's input x and its weights."""
    H, Hkv, D = m.cfg.n_heads, m.cfg.n_kv_heads, m.cfg.d_head
    heads = lambda t: t.view(*t.shape[:-1], -1, D)  # (B, T, heads, D)
    if family == "gpt2":  # Conv1D: x @ W + b, columns [q | k | v]
        return [heads(t) for t in (x @ attn.c_attn.weight + attn.c_attn.bias).split(H * D, dim=-1)]
    if family == "phi3":  # rows [q | k | v] of qkv_proj
        w = attn.qkv_proj.weight
        return [heads(x @ part.T) for part in w.split([H * D, Hkv * D, Hkv * D], dim=0)]
    if family.startswith("gpt_neox"):  # rows (H, 3, D): per head q, k, v
        w = attn.query_key_value.weight.view(H, 3, D, -1)
        b = attn.query_key_value.bias.view(H, 3, D)
        return [torch.einsum("btm,hdm->bthd", x, w[:, i]) + b[:, i] for i in range(3)]
    if family == "bert":
        return [heads(F.linear(x, p.weight, p.bias)) for p in (attn.query, attn.key, attn.value)]
    return [heads(F.linear(x, p.weight, p.bias)) for p in (attn.q_proj, attn.k_proj, attn.v_proj)]


def rotate(x, positions, config):
    """Rotary embedding (rotate-half convention) on the first rotary dims of x (B, T, heads, D)."""
    rope = config.rope_parameters
    d = x.shape[-1]
    rd = int(d * rope.get("partial_rotary_factor", 1.0))
    inv = 1.0 / (rope["rope_theta"] ** (torch.arange(0, rd, 2, dtype=torch.float32) / rd))  # (rd / 2,)
    ang = positions[..., None].float() * inv  # (B, T, rd / 2)
    cos, sin = ang.cos().repeat(1, 1, 2)[:, :, None], ang.sin().repeat(1, 1, 2)[:, :, None]  # (B, T, 1, rd)
    r, rest = x[..., :rd], x[..., rd:]
    half = torch.cat([-r[..., rd // 2:], r[..., : rd // 2]], dim=-1)
    return torch.cat([r * cos + half * sin, rest], dim=-1)


def attention_input(m, family, layer, prompts, padding_side="right"):
    """The hidden states the attention module of `layer` receives, read with a plain hook."""
    mod = dict(m.hf.named_modules())[HF_ATTN[family].format(L=layer)]
    got = {}

    def grab(module, args, kwargs):
        got["x"] = args[0] if args else kwargs["hidden_states"]

    h = mod.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        b = m.batch(prompts, padding_side)
        with torch.no_grad():
            m.hf(**m.forward_kwargs(b))
    finally:
        h.remove()
    return mod, got["x"], b


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_sites_equal_a_computation_from_the_weights(family):
    m, layer = tiny(family), 1
    names = sites(m, layer) + [f"blocks.{layer}.attn.hook_pattern", f"blocks.{layer}.attn.hook_z"]
    _, cache = m.run(PROMPTS, capture=names)
    attn, x, b = attention_input(m, family, layer, PROMPTS)
    q, k, v = qkv_reference(m, family, attn, x)
    H, Hkv, D = m.cfg.n_heads, m.cfg.n_kv_heads, m.cfg.d_head
    assert cache[f"blocks.{layer}.attn.hook_k"].shape == (len(PROMPTS), b.input_ids.shape[1], Hkv, D)
    for name, ref in zip("qkv", (q, k, v)):
        torch.testing.assert_close(cache[f"blocks.{layer}.attn.hook_{name}"], ref, rtol=0, atol=1e-5)
    if family in ROTARY:
        q, k = rotate(q, b.position_ids, m.hf.config), rotate(k, b.position_ids, m.hf.config)
        torch.testing.assert_close(cache[f"blocks.{layer}.attn.hook_rot_q"], q, rtol=0, atol=1e-5)
        torch.testing.assert_close(cache[f"blocks.{layer}.attn.hook_rot_k"], k, rtol=0, atol=1e-5)
    rep = lambda t: t.repeat_interleave(H // Hkv, dim=2)  # kv head j serves query heads j * H/H_kv ...
    scores = torch.einsum("bqhd,bkhd->bhqk", q, rep(k)) / D ** 0.5  # (B, H, Tq, Tk)
    t = b.input_ids.shape[1]
    allowed = b.attention_mask[:, None, None, :].expand(-1, H, t, -1)  # real keys ...
    if family != "bert":
        allowed = allowed & torch.ones(t, t, dtype=torch.bool).tril()  # ... at or before the query
    real_q = b.attention_mask[:, None, :, None].expand_as(allowed)
    got = cache[f"blocks.{layer}.attn.hook_attn_scores"]
    torch.testing.assert_close(got[allowed & real_q], scores[allowed & real_q], rtol=0, atol=1e-4)
    assert bool((got[~allowed & real_q] <= torch.finfo(got.dtype).min / 2).all())  # masked before the softmax
    pattern = torch.softmax(got, dim=-1)
    torch.testing.assert_close(pattern[real_q], cache[f"blocks.{layer}.attn.hook_pattern"][real_q], rtol=0, atol=1e-6)
    z = torch.einsum("bhqk,bkhd->bqhd", pattern, rep(v))  # (B, T, H, D)
    real = b.attention_mask
    torch.testing.assert_close(cache[f"blocks.{layer}.attn.hook_z"][real], z[real], rtol=0, atol=1e-5)


@pytest.mark.parametrize("family", ALL_FAMILIES)
@pytest.mark.parametrize("side", ["left", "right"])
def test_batched_equals_alone(family, side):
    m = tiny(family)
    names = [s for layer in range(m.cfg.n_layers) for s in sites(m, layer)]
    _, cache = m.run(PROMPTS, capture=names, padding_side=side)
    for i, p in enumerate(PROMPTS):
        _, alone = m.run([p], capture=names, logits=False)
        real = cache.attention_mask[i]
        for s in names:
            got = cache[s][i]
            got = got[:, real][:, :, real] if s.endswith("attn_scores") else got[real]
            torch.testing.assert_close(got, alone[s][0], rtol=0, atol=1e-5, msg=f"{family} {side} {s}")


def _uniform_rows(pattern, causal):
    t = pattern.shape[-1]
    allowed = torch.ones(t, t, dtype=torch.bool).tril() if causal else torch.ones(t, t, dtype=torch.bool)
    return allowed / allowed.sum(-1, keepdim=True)  # (T, T)


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_patching_reaches_attention(family):
    """Own value: bitwise the same logits. Zero q, k, their rotations or the (unmasked) scores of one head: that
    head attends uniformly, the others are untouched. Zero v of kv head 0: the query heads it serves output 0."""
    m, L = tiny(family), 1
    H, Hkv = m.cfg.n_heads, m.cfg.n_kv_heads
    prompt = PROMPTS[:1]
    ref, base = m.run(prompt, capture=[f"blocks.{L}.attn.hook_pattern", f"blocks.{L}.attn.hook_z"])
    plain, _ = m.run(prompt)
    for s in sites(m, L):
        eager = s.endswith("attn_scores")
        same, _ = m.run(prompt, patch={s: lambda a: a.clone()}, capture=[s] if eager else [])
        assert torch.equal(same, ref if eager else plain), s

    def zero_head(a, head_dim):
        a = a.clone()
        a.select(head_dim, 0).zero_()
        return a

    causal = family != "bert"
    for kind, head_dim in [("q", 2), ("k", 2), ("rot_q", 2), ("rot_k", 2), ("attn_scores", 1)]:
        if kind.startswith("rot") and family not in ROTARY:
            continue
        if kind == "attn_scores":  # keep the mask, zero the rest
            fn = lambda a: torch.where(a > torch.finfo(a.dtype).min / 2, zero_head(a, 1), a)
        else:
            fn = lambda a, d=head_dim: zero_head(a, d)
        _, c = m.run(prompt, patch={f"blocks.{L}.attn.hook_{kind}": fn}, capture=[f"blocks.{L}.attn.hook_pattern"])
        pat, was = c[f"blocks.{L}.attn.hook_pattern"][0], base[f"blocks.{L}.attn.hook_pattern"][0]
        hit = range(H // Hkv) if kind in ("k", "rot_k") else range(1)  # query heads reading kv head 0
        for h in range(H):
            want = _uniform_rows(pat, causal) if h in hit else was[h]
            torch.testing.assert_close(pat[h], want, rtol=0, atol=1e-6, msg=f"{family} {kind} head {h}")
    _, c = m.run(prompt, patch={f"blocks.{L}.attn.hook_v": lambda a: zero_head(a, 2)},
                 capture=[f"blocks.{L}.attn.hook_z"])
    z, was = c[f"blocks.{L}.attn.hook_z"][0], base[f"blocks.{L}.attn.hook_z"][0]  # (T, H, D)
    served = H // Hkv
    assert torch.equal(z[:, :served], torch.zeros_like(z[:, :served]))
    torch.testing.assert_close(z[:, served:], was[:, served:], rtol=0, atol=1e-5)


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_reading_qkv_keeps_the_fused_kernel(family, monkeypatch):
    import transformers.integrations.sdpa_attention as sdpa

    m = tiny(family)
    calls = []
    real = sdpa.sdpa_attention_forward
    monkeypatch.setattr(sdpa, "sdpa_attention_forward", lambda mod, *a, **k: calls.append(mod) or real(mod, *a, **k))
    every = [s for layer in range(m.cfg.n_layers) for s in sites(m, layer, scores=False)]
    m.run(PROMPTS[:1], capture=every, patch={"blocks.0.attn.hook_q": lambda a: a * 1.5})
    assert len(calls) == m.cfg.n_layers  # q, k, v and their rotations, read or written: still the fused kernel
    calls.clear()
    m.run(PROMPTS[:1], capture=every + ["blocks.1.attn.hook_attn_scores"])
    assert len(calls) == m.cfg.n_layers - 1  # the scores make their own layer (only) explicit
    assert m.module(HF_ATTN[family].format(L=1)) not in calls


def test_early_stop_at_q_equals_full_run():
    m = tiny("phi3")
    _, full = m.run(PROMPTS, capture=["blocks.0.attn.hook_k", "blocks.0.attn.hook_q"])
    _, early = m.run(PROMPTS, capture=["blocks.0.attn.hook_k", "blocks.0.attn.hook_q"], logits=False)
    for s in full:
        assert torch.equal(full[s], early[s])


@pytest.mark.parametrize("family", ["gpt2", "bert"])
def test_rotations_do_not_exist_without_rotary(family):
    m = tiny(family)
    assert "blocks.0.attn.hook_rot_q" not in m.site_names() and "blocks.0.attn.hook_q" in m.site_names()
    with pytest.raises(MechscopeError, match="hook_q"):
        m.site("blocks.0.attn.hook_rot_q")
    with pytest.raises(MechscopeError, match="hook_k"):
        m.site("blocks.0.attn.hook_rot_k")


def test_packed_rows_refuse_scores_but_read_rotations():
    m = tiny("llama")
    rows = [m.encode(p) for p in PROMPTS]
    with pytest.raises(MechscopeError, match="packed"):
        m.run(m.packed(rows), capture=["blocks.0.attn.hook_attn_scores"])
    _, cache = m.run(m.packed(rows), capture=["blocks.1.attn.hook_rot_k"])
    _, alone = m.run([PROMPTS[1]], capture=["blocks.1.attn.hook_rot_k"])
    start = len(rows[0])
    torch.testing.assert_close(cache["blocks.1.attn.hook_rot_k"][0, start:start + len(rows[1])],
                               alone["blocks.1.attn.hook_rot_k"][0], rtol=0, atol=1e-5)
