"""The embedded all-MiniLM-L6-v2 (BERT, 6 layers, d_model 384): loaded as the bare encoder it is, every site checked
against the plain HF forward on its real weights, and commands that need a language-model head refused in one line.
"""
import pytest
import torch
from click.testing import CliRunner

import mechscope
from mechscope.cli import main

PROMPTS = ["The movie was wonderful, I loved it.", "Awful.", "Not bad at all, honestly quite a good film!"]
KINDS = ["hook_resid_pre", "attn.hook_pattern", "attn.hook_z", "hook_attn_out", "hook_resid_mid", "mlp.hook_post",
         "hook_mlp_out", "hook_resid_post"]


@pytest.fixture(scope="module")
def minilm():
    return mechscope.load("minilm", device="cpu")


@pytest.fixture(scope="module")
def reference(minilm):
    """Every site of every layer computed here from HF's own modules, one step at a time, for the padded batch:
    HF's hidden states give resid_pre/post, an eager copy of the model gives the attention probabilities, and the
    block's own sub-modules (applied by hand in the order BERT's layer applies them) give the rest."""
    import transformers as tf

    m = minilm
    b = m.batch(PROMPTS)
    eager = tf.AutoModel.from_pretrained(str(mechscope.loading.embedded_folder("minilm")),
                                         attn_implementation="eager").eval()
    mask = b.attention_mask.long()
    with torch.no_grad():
        out = eager(input_ids=b.input_ids, attention_mask=mask, output_hidden_states=True, output_attentions=True)
        ref = {"hook_embed": eager.embeddings.word_embeddings(b.input_ids),
               "hook_pos_embed": eager.embeddings.position_embeddings(b.position_ids)}
        B, T = b.input_ids.shape
        H, D = m.cfg.n_heads, m.cfg.d_head
        for L, layer in enumerate(eager.encoder.layer):
            x = out.hidden_states[L]  # (B, T, d_model)
            att = layer.attention
            pattern = out.attentions[L]  # (B, H, T, T)
            v = att.self.value(x).view(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
            z = (pattern @ v).transpose(1, 2)  # (B, T, H, D)
            attn_out = att.output.dense(z.reshape(B, T, H * D))  # (B, T, d_model)
            mid = att.output.LayerNorm(attn_out + x)
            post = layer.intermediate(mid)  # GELU(dense(mid)): (B, T, d_mlp)
            mlp_out = layer.output.dense(post)
            resid_post = layer.output.LayerNorm(mlp_out + mid)
            torch.testing.assert_close(resid_post, out.hidden_states[L + 1], rtol=0, atol=1e-4)  # the chain is HF's
            for kind, val in zip(KINDS, [x, pattern, z, attn_out, mid, post, mlp_out, out.hidden_states[L + 1]]):
                ref[f"blocks.{L}.{kind}"] = val
            q, k = (lin(x).view(B, T, H, D) for lin in (att.self.query, att.self.key))  # (B, T, H, D)
            ref.update({f"blocks.{L}.attn.hook_q": q, f"blocks.{L}.attn.hook_k": k,
                        f"blocks.{L}.attn.hook_v": v.transpose(1, 2),
                        f"blocks.{L}.attn.hook_attn_scores": torch.einsum("bqhd,bkhd->bhqk", q, k) / D ** 0.5})
    return b, ref


def test_minilm_loads_as_bare_encoder_without_random_head(capfd):
    m = mechscope.load("minilm", device="cpu")
    err = capfd.readouterr().err
    assert type(m.hf).__name__ == "BertModel" and not m.has_lm_head
    assert "newly initialized" not in err and "not initialized" not in err
    assert (m.cfg.family, m.cfg.n_layers, m.cfg.d_model, m.cfg.n_heads) == ("bert", 6, 384, 12)
    assert m.name == "all-MiniLM-L6-v2" and m.site_names()[:2] == ["hook_embed", "hook_pos_embed"]


@pytest.mark.slow
def test_every_site_alone_equals_hf(minilm, reference):
    b, ref = reference
    real = b.attention_mask
    for name in minilm.site_names():
        _, cache = minilm.run(PROMPTS, capture=[name], logits=False)  # one site alone per run
        got, want = cache[name], ref[name]
        assert got.shape == want.shape, name
        if name.endswith(("hook_pattern", "hook_attn_scores")):  # (B, H, T, T): real queries x real keys
            keep = real[:, None, :, None] & real[:, None, None, :]
            got, want = got * keep, want * keep
        else:
            got, want = got[real], want[real]
        torch.testing.assert_close(got, want, rtol=0, atol=2e-4, msg=name)


@pytest.mark.slow
@pytest.mark.parametrize("side", ["left", "right"])
def test_batched_equals_alone_under_padding(minilm, side):
    sites = [n for n in minilm.site_names() if n.startswith("blocks.")]
    logits, cache = minilm.run(PROMPTS, capture=sites, padding_side=side)
    assert logits is None  # a bare encoder has no logits
    assert len(set(cache.lengths.tolist())) > 1  # the batch really is padded
    for i, p in enumerate(PROMPTS):
        _, alone = minilm.run([p], capture=sites)
        real = cache.attention_mask[i]
        for s in sites:
            got = cache[s][i][:, real][:, :, real] if s.endswith(("hook_pattern", "hook_attn_scores")) \
                else cache[s][i][real]
            torch.testing.assert_close(got, alone[s][0], rtol=0, atol=2e-4, msg=f"{side} {s}")


@pytest.mark.parametrize("args", [
    ["next-token", "Hello"], ["lens", "Hello"], ["generate", "Hello"],
    ["patch", "--clean", "a b", "--corrupt", "a c", "--tokens", "b", "c"],
])
def test_commands_needing_a_head_say_so_in_one_line(args, tmp_path):
    r = CliRunner().invoke(main, args + ["--model", "minilm", "--out", str(tmp_path / "o")] if args[0] in
                           ("lens", "patch") else args + ["--model", "minilm"])
    assert r.exit_code == 2, r.output
    msg = r.output.strip()
    assert "has none" in msg and "probe" in msg and "Traceback" not in msg and msg.count("\n") == 0
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_core_functions_raise_mechscope_error(minilm):
    for call in (lambda: mechscope.next_token_table(minilm, "x"), lambda: mechscope.logit_lens(minilm, "x"),
                 lambda: minilm.unembed(torch.zeros(384))):
        with pytest.raises(mechscope.MechscopeError, match="has none"):
            call()


def test_lens_free_commands_work(tmp_path):
    r = CliRunner().invoke(main, ["inspect", "--model", "minilm", "--json"])
    assert r.exit_code == 0, r.output
    assert '"n_layers": 6' in r.output and '"shape": "(B, 12, T, T)"' in r.output
    r = CliRunner().invoke(main, ["tokenize", "Unbelievably good", "--model", "minilm", "--json"])
    assert r.exit_code == 0, r.output
    assert "[CLS]" in r.output and "[SEP]" in r.output


def test_class_choice_by_checkpoint_head(tmp_path):
    """A classifier folder opens as a classifier (its own head, same logits), an MLM checkpoint with its head."""
    import transformers as tf
    from mechscope.tiny import char_tokenizer, tiny_config

    cfg = tiny_config("bert")
    cfg.num_labels = 3
    torch.manual_seed(0)
    for cls, name in [(tf.BertForSequenceClassification, "BertForSequenceClassification"),
                      (tf.BertForMaskedLM, "BertForMaskedLM"), (tf.BertModel, "BertModel")]:
        hf = cls(cfg).eval()
        folder = tmp_path / name
        hf.save_pretrained(folder)
        char_tokenizer(bert=True).save_pretrained(folder)
        m = mechscope.load(str(folder), device="cpu")
        assert type(m.hf).__name__ == name
        assert m.has_lm_head == (name == "BertForMaskedLM")
        b = m.batch(["ab c", "d"])
        with torch.no_grad():
            want = getattr(hf(**m.forward_kwargs(b)), "logits", None)
        logits, _ = m.run(["ab c", "d"])
        if want is None:
            assert logits is None
        else:
            torch.testing.assert_close(logits, want, rtol=0, atol=1e-5)
