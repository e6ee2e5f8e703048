"""mechscope.lab.from_scratch equals the HF forward at every site; compare() finds the first site of planted bugs."""
import inspect
import types

import pytest
import torch

import mechscope.lab.scratch as scratch
from mechscope import MechscopeError, Model
from mechscope.lab import compare, from_scratch
from mechscope.tiny import tiny_hf

PROMPT = "Attention is all you need, said the paper."

# q/k/v, the rotated q/k and the pre-softmax scores are read inside attention; the from-scratch forward records
# every other canonical site
INSIDE_ATTENTION = ("attn.hook_q", "attn.hook_k", "attn.hook_v", "attn.hook_rot_q", "attn.hook_rot_k",
                    "attn.hook_attn_scores")


def recorded_sites(model) -> list:
    return [n for n in model.site_names() if not n.endswith(INSIDE_ATTENTION)]


def _tiny(family):
    """A tiny random model whose biases and norm weights are random too (zeros and ones would hide bugs)."""
    hf, tok = tiny_hf(family, seed=3)
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if p.ndim == 1:
                p.normal_(1.0 if ("norm" in name or "ln" in name) else 0.0, 0.2)
    return Model(hf, tok, name=f"tiny-{family}")


@pytest.fixture(scope="module")
def gpt2():
    return _tiny("gpt2")


@pytest.fixture(scope="module")
def llama():
    return _tiny("llama")


def planted(old: str, new: str):
    """A copy of the from-scratch module with one bug planted (text replaced once in its source)."""
    src = inspect.getsource(scratch)
    assert src.count(old) == 1, f"cannot plant: {old!r} occurs {src.count(old)} times"
    mod = types.ModuleType("planted_scratch")
    exec(compile(src.replace(old, new), "planted_scratch.py", "exec"), mod.__dict__)
    return mod.from_scratch


@pytest.mark.parametrize("family", ["gpt2", "llama", "qwen2"])
def test_from_scratch_equals_hf_at_every_site(family, request):
    model = request.getfixturevalue(family) if family != "qwen2" else _tiny("qwen2")
    result = compare(from_scratch(model), model, PROMPT, atol=1e-5, rtol=1e-5)
    assert result.ok, str(result)
    names = [s.name for s in result.sites]
    assert names[:-1] == recorded_sites(model) and names[-1] == "logits"  # every canonical site, in forward order
    assert result.sites[-1].max_abs < 1e-4 and result.sites[-1].shape == (1, len(result.tokens), 128)
    with torch.no_grad():  # and the plain call (no record) gives the HF logits
        ids = model.batch(PROMPT).input_ids
        torch.testing.assert_close(from_scratch(model)(ids), model.hf(ids).logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family,old,new,site,word", [
    ("gpt2", "/ math.sqrt(d_head)", "/ d_head", "blocks.0.attn.hook_pattern", "scale"),
    ("gpt2", 'scores.masked_fill(future, float("-inf")).softmax', "scores.softmax", "blocks.0.attn.hook_pattern",
     "mask"),
    ("llama", "q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)", "pass", "blocks.0.attn.hook_pattern",
     "rotary"),
    ("gpt2", ' + w[p + "attn.c_proj.bias"]', "", "blocks.0.hook_attn_out", "bias"),
    ("llama", "k.repeat_interleave(H // H_kv, dim=1), v.repeat_interleave(H // H_kv, dim=1)",
     "k.repeat(1, H // H_kv, 1, 1), v.repeat(1, H // H_kv, 1, 1)", "blocks.0.attn.hook_pattern", "repeat_interleave"),
])
def test_compare_flags_first_site_of_planted_bug(family, old, new, site, word, request):
    model = request.getfixturevalue(family)
    result = compare(planted(old, new)(model), model, PROMPT)
    assert not result.ok and result.first_divergence == site, str(result)
    assert word in result.hint
    first = [s.name for s in result.sites].index(site)
    assert all(s.ok for s in result.sites[:first]) and not result.sites[-1].ok


def test_compare_names_the_cause_it_sees(gpt2):
    no_mask = compare(planted('scores.masked_fill(future, float("-inf")).softmax', "scores.softmax")(gpt2), gpt2,
                      PROMPT)
    site = "blocks.0.attn.hook_pattern"
    assert "future positions" in {s.name: s.note for s in no_mask.sites}[site]
    wrong_scale = compare(planted("/ math.sqrt(d_head)", "/ d_head")(gpt2), gpt2, PROMPT)
    assert "flatter" in {s.name: s.note for s in wrong_scale.sites}[site]


def test_compare_post_norm_swap_shows_at_mlp(gpt2):
    """The MLP fed the raw stream and the norm applied after the add (post-norm) in a pre-norm model."""
    old = 'h = layer_norm(x, w[p + "ln_2.weight"], w[p + "ln_2.bias"], c.layer_norm_epsilon)'
    src = inspect.getsource(scratch)
    assert src.count(old) == 1 and src.index("x = x + mlp_out\n") < src.index("class Llama")  # GPT-2 first
    src = src.replace(old, "h = x").replace(
        "x = x + mlp_out\n", 'x = layer_norm(x + mlp_out, w[p + "ln_2.weight"], w[p + "ln_2.bias"], '
        "c.layer_norm_epsilon)\n", 1)
    mod = types.ModuleType("swapped")
    exec(compile(src, "swapped.py", "exec"), mod.__dict__)
    result = compare(mod.from_scratch(gpt2), gpt2, PROMPT)
    assert result.first_divergence == "blocks.0.mlp.hook_post" and "norm placement" in result.hint


def test_compare_some_sites_and_bad_names(gpt2):
    full = from_scratch(gpt2)

    def few(ids, record):  # records only two sites, out of order
        out = {}
        logits = full(ids, lambda n, t: out.__setitem__(n, t))
        record("blocks.2.hook_resid_post", out["blocks.2.hook_resid_post"])
        record("blocks.-3.hook_resid_pre", out["blocks.0.hook_resid_pre"][0])  # no batch axis, negative layer
        return logits

    result = compare(few, gpt2, PROMPT)
    assert result.ok and [s.name for s in result.sites] == ["blocks.0.hook_resid_pre", "blocks.2.hook_resid_post",
                                                             "logits"]
    with pytest.raises(MechscopeError, match="blocks.0.hook_resid_post"):
        compare(lambda ids, record: record("blocks.0.hook_resid_pots", ids), gpt2, PROMPT)

    def bad_shape(ids, record):
        record("blocks.0.attn.hook_z", torch.zeros(1, 3, 64))
        return full(ids)

    result = compare(bad_shape, gpt2, PROMPT)
    assert result.first_divergence == "blocks.0.attn.hook_z" and "shape (1, 3, 64)" in result.sites[0].note


def test_from_scratch_greedy_generation_equals_mechscope_generate(llama):
    from mechscope import generate

    ref = generate(llama, "Once upon", 12)
    ids = torch.tensor([ref["prompt_token_ids"]])
    out = from_scratch(llama).generate(ids, 12)
    assert out[0, ids.shape[1]:].tolist() == ref["completion_token_ids"]


@pytest.mark.slow
def test_from_scratch_on_embedded_smollm2(default_model):
    """The 30-layer SmolLM2 (Llama, GQA, tied embeddings): every site, the logits, and greedy generation."""
    from mechscope import generate

    result = compare(from_scratch(default_model), default_model, "The capital of France is")
    assert result.ok, str(result)
    assert len(result.sites) == len(recorded_sites(default_model)) + 1
    ref = generate(default_model, "The capital of France is", 8)
    ids = torch.tensor([ref["prompt_token_ids"]])
    out = from_scratch(default_model).generate(ids, 8)
    assert out[0, ids.shape[1]:].tolist() == ref["completion_token_ids"]
