"""`mechscope lab`: the transformer lab (attention, positional encoding, blocks and a from-scratch forward, each
checked against a real implementation; `compare` checks your own forward site by site)."""
from __future__ import annotations

from pathlib import Path

import click

from ..errors import ConfigError
from . import common


@click.group("lab")
def lab():
    """The transformer lab: pictures of attention and positional encoding, and a site-by-site checker for your own
    forward pass (see docs/lab.md).

    \b
    Example:
      mechscope lab pe --out out/lab
      mechscope lab attention --text "the cat sat on the mat" --causal --out out/lab
    """


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    from ..fsio import save_figure

    try:
        save_figure(fig, path, dpi=120)
    finally:
        plt.close(fig)
    click.echo(f"wrote {path}")


@lab.command("pe")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for positional_encoding.png (created if missing).")
@click.option("--positions", default=100, show_default=True, type=int, help="Number of positions drawn.")
@click.option("--d-model", default=64, show_default=True, type=int, help="Width of the encoding (even).")
@click.option("--base", default=10000.0, show_default=True, type=float, help="Base of the frequencies.")
def pe_cmd(out_dir, positions, d_model, base):
    """Draw the sinusoidal positional encoding (NumPy, mechscope.lab.sinusoidal_encoding) as OUT/positional_encoding.png:
    the encoding as a heatmap, and PE[p] . PE[p + k] against k for several p (the curves coincide)."""
    from ..lab.attention_np import sinusoidal_encoding
    from ..lab.figures import pe_figure

    if positions < 4:
        raise ConfigError(f"--positions {positions} is too small to draw: use at least 4.", argument="positions")
    if d_model < 2 or d_model % 2:
        raise ConfigError(f"--d-model {d_model} must be an even number >= 2 (sines and cosines come in pairs).",
                          argument="d_model")
    if not base > 1:
        raise ConfigError(f"--base {base} must be > 1 (10000 in the original Transformer).", argument="base")
    _save(pe_figure(sinusoidal_encoding(positions, d_model, base), base), out_dir / "positional_encoding.png")


@lab.command("attention")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for attention.png (created if missing).")
@click.option("--text", default="the cat sat on the mat", show_default=True,
              help="Words (split on spaces) to attend over.")
@click.option("--causal", is_flag=True, help="Apply the causal mask (each word sees only itself and earlier words).")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the random word vectors.")
def attention_cmd(out_dir, text, causal, seed):
    """Self-attention by hand in NumPy on a few words, drawn as OUT/attention.png.

    Each distinct word gets a random vector; Q = K = V = the word vectors (no learned projections), so the
    weights softmax(Q K^T / sqrt(d)) show each word attending most to itself and to its repeats.
    """
    from ..lab.attention_np import toy_self_attention
    from ..lab.figures import attention_figure

    words = text.split()
    if not words:
        raise ConfigError(f"--text {text!r} has no words. Give a few words separated by spaces.", argument="text")
    if len(words) > 32:
        raise ConfigError(f"--text has {len(words)} words; the picture stays readable up to 32. Shorten it.",
                          argument="text")
    _, weights = toy_self_attention(words, seed=seed, causal=causal)
    title = "NumPy self-attention weights" + (" (causal mask)" if causal else "")
    _save(attention_figure(words, weights, title), out_dir / "attention.png")



@lab.command("compare")
@click.option("--student", required=True, metavar="FILE.py:FUNCTION",
              help="Your forward: FUNCTION(input_ids, record[, model]) in FILE.py, returning logits (1, T, vocab).")
@click.option("--prompt", "-p", required=True, help="Text to run both forwards on.")
@click.option("--atol", default=1e-4, show_default=True, type=float, help="Absolute tolerance per element.")
@click.option("--rtol", default=1e-4, show_default=True, type=float, help="Relative tolerance per element.")
@common.model_options
@common.json_option
def compare_cmd(student, prompt, atol, rtol, model_name, dtype, device, as_json):
    """Check your own forward pass against the real model, site by site.

    FUNCTION(input_ids, record) computes the logits (1, T, vocab) from input_ids (1, T) and calls
    record(site_name, tensor) at each canonical site it computes (hook_embed, blocks.0.attn.hook_pattern, ...;
    see `mechscope inspect`). A third parameter, if FUNCTION has one, receives the loaded mechscope Model (read
    its weights from model.hf.state_dict()). The real model runs with the same sites captured; the table lists
    every site in forward order with max and mean |difference|, and the first site that diverges comes with what
    usually causes it. Exit code 0 when every site matches, 1 when one diverges.

    \b
    Example:
      mechscope lab compare --student docs/examples/student.py:forward --prompt "The cat sat on the mat"
    """
    from ..lab.compare import compare
    from ..lab.student import load_student

    common.require_text("--prompt", prompt)
    fn = load_student(student)
    model = common.load_model(model_name, "fp32" if dtype == "auto" else dtype, device)
    result = compare(fn.bind(model), model, prompt, atol=atol, rtol=rtol)
    if as_json:
        common.emit_json(result.to_dict())
    else:
        click.echo(str(result))
    if not result.ok:
        raise SystemExit(1)


# Subcommands written in their own modules are attached here with a plain import, one pair of lines each.
from .lab_rnn import rnn_cmd  # noqa: E402

lab.add_command(rnn_cmd)
