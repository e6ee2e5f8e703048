"""`mechscope attention`: every layer x head's attention pattern in one offline page."""
from __future__ import annotations

import click

from . import common


@click.command("attention")
@click.argument("text")
@click.option("--layers", default=None, help="Layers to show, e.g. '0-5,20' or '-1' [default: all].")
@click.option("--heads", default=None, help="Heads to show in every shown layer, e.g. '0-3' [default: all].")
@click.option("--pair", default=None, help="A second sentence, for encoders (BERT): [CLS] TEXT [SEP] PAIR [SEP].")
@click.option("--out", "out_dir", default="out/attention", show_default=True, type=click.Path(file_okay=False),
              help="Folder for attention.html, patterns.safetensors, tokens.json and grid.png.")
@click.option("--overwrite", is_flag=True, help="Replace the outputs of an earlier run in --out.")
@common.model_options
@common.json_option
def attention_cmd(text, layers, heads, pair, out_dir, overwrite, model_name, dtype, device, as_json):
    """Attention patterns (blocks.L.attn.hook_pattern) of every shown layer and head on TEXT.

    \b
    Writes to --out (refused if it is not empty, unless --overwrite):
      attention.html        one self-contained page (opens from disk, no network): a grid of layer x head
                            thumbnails (click one to enlarge it, hover it for the weight of a query/key pair),
                            a layer selector, and the tokens (hover one to see where it attends, or tick the box
                            for what attends to it, with the weights). Weights are stored with 8 bits.
      patterns.safetensors  float32 (heads, T, T) per shown layer, keyed 'blocks.L.attn.hook_pattern'
      tokens.json           token ids and pieces (and the layers and heads shown)
      grid.png              the thumbnail grid as a picture

    \b
    Only the shown layers compute their attention explicitly; the others keep the fused kernel.

    \b
    Examples:
      mechscope attention "When Mary and John went to the store, John gave a drink to" --layers 0-5
      mechscope attention "The cat sat." --pair "It was tired." --model <a BERT model>
    """
    from rich.text import Text

    from ..attention import view

    common.require_text("TEXT", text)
    model = common.load_model(model_name, dtype, device)
    res = view(model, text, out=out_dir, layers=layers, heads=heads, pair=pair, overwrite=overwrite)
    r, paths = res["result"], res["paths"]
    summary = {"model": r.model, "tokens": len(r.ids), "layers": r.layers, "heads": r.heads,
               "files": {k: str(v) for k, v in paths.items()}}
    if as_json:
        common.emit_json(summary)
        return
    con = common.console()
    con.print(Text(f"{r.model}: {len(r.ids)} tokens, {len(r.layers)} layers x {len(r.heads)} heads"))
    for name, path in paths.items():
        con.print(Text(f"  {name:22s} {path}"))
