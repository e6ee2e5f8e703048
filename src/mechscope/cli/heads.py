"""`mechscope heads`: score every attention head as a previous-token, current-token, first-token, duplicate-token
and induction head, each with a baseline, and check the induction heads causally."""
from __future__ import annotations

from pathlib import Path

import click

from ..errors import ConfigError, DataError
from . import common


def _read_prompts(path) -> list:
    p = Path(path)
    if not p.is_file():
        raise DataError(f"prompts={str(p)!r}: no such file. Give a text file with one prompt per line.", "prompts")
    try:
        lines = [ln for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip()]
    except UnicodeDecodeError:
        raise DataError(f"prompts={str(p)!r} is not UTF-8 text. Give a text file with one prompt per line.",
                        "prompts") from None
    if not lines:
        raise DataError(f"prompts={str(p)!r} has no non-empty line. Write one prompt per line.", "prompts")
    return lines


@click.command("heads")
@click.option("--seq-len", type=int, default=None, help="Length n of the random half r of [BOS] + r + r [default: 50].")
@click.option("--batch", type=int, default=None, help="Number of repeated random sequences [default: 10].")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random tokens (and shuffles).")
@click.option("--prompts", "prompts_file", default=None, type=click.Path(dir_okay=False),
              help="Score on your own text instead: a file with one prompt per line.")
@click.option("--verify", "verify_k", type=int, default=None, metavar="K",
              help="Ablate the top-K induction heads and K random heads; compare the repeated-half loss.")
@click.option("--ablation", type=click.Choice(["zero", "mean"]), default="zero", show_default=True,
              help="How --verify ablates a head's attn.hook_z.")
@click.option("--draws", type=int, default=5, show_default=True, help="Random draws of K heads for --verify.")
@click.option("--out", "out_dir", default="out/heads", show_default=True, type=click.Path(),
              help="Folder for heads.json, heads.png and report.html.")
@click.option("--overwrite", is_flag=True, help="Replace the outputs of an earlier run in --out.")
@common.model_options
@common.json_option
def heads_cmd(seq_len, batch, seed, prompts_file, verify_k, ablation, draws, out_dir, overwrite, model_name, dtype,
              device, as_json):
    """Score every attention head for the classic head types, on [BOS] + r + r repeated random tokens (r: SEQ_LEN
    distinct random tokens, BATCH sequences) or on --prompts FILE, in batched forwards.

    \b
    previous_token   attention from i to i-1          current_token  from i to i
    first_token      from i to position 0 (BOS)       duplicate_token  to earlier positions with the same token
    induction        to the position after an earlier copy of the current token (i -> i - n + 1 on r + r)
    Each is a mean over the query positions that have a target (definitions: docs/heads.md), with its spread
    (standard deviation over sequences) and a baseline: the same statistic at the same positions on sequences
    without the repeat ([BOS] + r + r') or, for --prompts, on the prompt's tokens shuffled.

    \b
    --verify K ablates the K best induction heads (zero or mean ablation of attn.hook_z) and reports the loss on
    the repeated half before and after, next to K random other heads (--draws times).
    Writes OUT/heads.json, OUT/heads.png and OUT/report.html.

    \b
    Example:
      mechscope heads --verify 3 --out out/heads
    """
    from ..attention.heads import check_sizes, head_scores
    from ..attention.heads_report import check_out
    from ..attention.verify import check_verify

    if prompts_file and (seq_len is not None or batch is not None):
        raise ConfigError("Give either --prompts FILE or --seq-len/--batch (the repeated random sequences), not "
                          "both.", "prompts")
    seq_len = 50 if seq_len is None else seq_len
    batch = 10 if batch is None else batch
    check_sizes(seq_len, batch)
    check_verify(verify_k, ablation, draws)
    check_out(out_dir, overwrite)
    prompts = _read_prompts(prompts_file) if prompts_file else None
    model = common.load_model(model_name, dtype, device)
    result = head_scores(model, seq_len=seq_len, batch=batch, seed=seed, prompts=prompts, verify=verify_k,
                         ablation=ablation, draws=draws)
    result.command = _command(model_name, seq_len, batch, seed, prompts_file, verify_k, ablation, draws, out_dir)
    paths = result.save(out_dir, overwrite=overwrite)
    if as_json:
        common.emit_json({**result.to_json(), "files": {k: str(v) for k, v in paths.items()}})
        return
    _print(result, paths)


def _command(model_name, seq_len, batch, seed, prompts_file, k, ablation, draws, out_dir) -> str:
    import shlex

    parts = ["mechscope", "heads"] + (["--model", model_name] if model_name != "default" else [])
    parts += ["--prompts", prompts_file] if prompts_file else ["--seq-len", str(seq_len), "--batch", str(batch)]
    parts += ["--seed", str(seed)]
    if k:
        parts += ["--verify", str(k), "--ablation", ablation, "--draws", str(draws)]
    return " ".join(shlex.quote(p) for p in parts + ["--out", str(out_dir)])


def _print(result, paths) -> None:
    from rich.table import Table

    from ..attention.heads import SCORE_TYPES

    con = common.console()
    t = Table(title=f"Top heads per type ({result.model}): score ± spread (baseline)", title_justify="left")
    for col in ("type", "1st", "2nd", "3rd"):
        t.add_column(col)
    for kind in SCORE_TYPES:
        cells = [f"L{L}H{h} {v:.2f}±{result.spread[kind][L][h]:.2f} ({result.baseline[kind][L][h]:.2f})"
                 for L, h, v in result.top(kind, 3)]
        t.add_row(kind, *cells)
    con.print(t)
    v = result.verify
    if v:
        heads = ", ".join(f"L{a}H{b}" for a, b in v["top_heads"])
        con.print(f"verify ({v['ablation']} ablation): repeated-half loss {v['loss_before']:.4f} -> "
                  f"{v['loss_after']:.4f} ({v['increase']:+.4f}) ablating {heads}; K random heads: "
                  f"{v['random_increase_mean']:+.4f} on average, at most {v['random_increase_max']:+.4f} "
                  f"({v['draws']} draws)", markup=False, highlight=False)
    for p in paths.values():
        con.print(f"wrote {p}", markup=False, highlight=False)
