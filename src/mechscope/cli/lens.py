"""`mechscope lens`: the logit lens, as a table and a PNG heatmap."""
from __future__ import annotations

from pathlib import Path

import click

from . import common


@click.command("lens")
@click.argument("prompt")
@click.option("--target", default=None, help="A single token to follow through the layers (e.g. ' Paris', leading "
              "space included): its probability and rank per layer and position.")
@click.option("--out", "out_dir", default="out/lens", show_default=True, type=click.Path(file_okay=False),
              help="Folder for lens.png.")
@common.model_options
@common.json_option
def lens_cmd(prompt, target, out_dir, model_name, dtype, device, as_json):
    """Logit lens on PROMPT: decode every block's output (blocks.L.hook_resid_post) through the final norm and the
    unembedding, and show per layer and position the top next token and its probability (and with --target that
    token's probability and rank, 1 = top). The last layer is the model's own prediction.

    Writes a heatmap to OUT/lens.png (layers on y, input tokens on x, colour = top-token probability or the
    target's probability, cell text = top token).

    \b
    Example:
      mechscope lens "The capital of France is" --target " Paris"
    """
    from rich.table import Table
    from rich.text import Text

    from ..lens import logit_lens, plot_lens

    common.require_text("PROMPT", prompt)
    if target is not None:
        common.require_text("--target", target)
    common.check_model_args(dtype, device)
    model = common.load_model(model_name, dtype, device)
    result = logit_lens(model, prompt, target)
    result.png = str(plot_lens(result, Path(out_dir) / "lens.png"))
    if as_json:
        common.emit_json(result.to_dict())
        return
    tgt = result.target_probs is not None
    table = Table(title=("Logit lens: top next token (probability)"
                         + (f"; P({target!r}) and its rank" if tgt else "")), title_justify="left")
    table.add_column("layer", justify="right")
    for i, tok in enumerate(result.tokens):
        table.add_column(f"{i}:{common.show_token(tok)}", overflow="fold")
    for li, layer in enumerate(result.layers):
        cells = []
        for pos in range(len(result.tokens)):
            cell = f"{common.show_token(result.top_tokens[li][pos])} {result.top_probs[li][pos]:.2f}"
            if tgt:
                cell += f"\n{result.target_probs[li][pos]:.3f} #{result.target_ranks[li][pos]}"
            cells.append(Text(cell))
        table.add_row(str(layer), *cells)
    con = common.console()
    con.print(table)
    con.print(Text(f"Heatmap written to {result.png}"))
