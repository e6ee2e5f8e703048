"""`mechscope inspect`: config (explained), module tree, parameter counts and sites of a model."""
from __future__ import annotations

import click

from . import common


def _fmt(n: int) -> str:
    return f"{n:,}" + (f"  ({n / 1e6:.1f} M)" if n >= 1e5 else "")


@click.command("inspect")
@common.model_options
@common.json_option
def inspect_cmd(model_name, dtype, device, as_json):
    """Describe a model: its config with an explanation of each field, the module tree (identical blocks
    collapsed), parameter counts per component and the table of sites with their shapes for this model.

    \b
    Example:
      mechscope inspect
      mechscope inspect --model gpt2 --json
    """
    from rich.table import Table
    from rich.text import Text

    from ..inspection import describe

    common.check_model_args(dtype, device)
    model = common.load_model(model_name, dtype, device)
    info = describe(model)
    if as_json:
        common.emit_json(info)
        return
    con = common.console()
    cfg = info["cfg"]
    con.print(Text(f"{info['name']}  family={info['family']}  layers={cfg['n_layers']}  d_model={cfg['d_model']}  "
                   f"heads={cfg['n_heads']} (kv {cfg['n_kv_heads']})  d_head={cfg['d_head']}  d_mlp={cfg['d_mlp']}  "
                   f"vocab={cfg['d_vocab']}  n_ctx={cfg['n_ctx']}  dtype={info['dtype']}  device={info['device']}",
                   style="bold"))

    table = Table(title="Config", title_justify="left")
    for col in ("field", "value", "meaning"):
        table.add_column(col, overflow="fold")
    for row in info["config"]:
        table.add_row(row["field"], Text(repr(row["value"]) if isinstance(row["value"], str) else str(row["value"])),
                      row["explanation"] or "")
    con.print(table)

    con.print(Text("Module tree", style="bold italic"))
    con.print(Text(info["module_tree"]))

    p = info["params"]
    table = Table(title="Parameters", title_justify="left")
    table.add_column("component")
    table.add_column("count", justify="right")
    for key, label in (("embeddings", "embeddings"), ("attention", "attention (all blocks)"),
                       ("mlp", "MLP (all blocks)"), ("norms", "norms"), ("unembedding", "unembedding"),
                       ("other", "other")):
        if key == "unembedding" and p["tied_embeddings"] and p[key] == 0:
            table.add_row(label, "tied to embeddings (counted once)")
        elif p[key] or key not in ("other",):
            table.add_row(label, _fmt(p[key]))
    per_block = p["per_block"]
    table.add_row("per block", _fmt(per_block) if isinstance(per_block, int) else ", ".join(map(str, per_block)))
    table.add_row("all blocks", _fmt(p["blocks"]))
    table.add_row(Text("total", style="bold"), Text(_fmt(p["total"]), style="bold"))
    con.print(table)

    table = Table(title="Sites (B = batch, T = tokens)", title_justify="left")
    for col in ("site", "layers", "shape", "what it is"):
        table.add_column(col, overflow="fold")
    for row in info["sites"]:
        table.add_row(row["site"], row["layers"] or "", row["shape"], row["description"] or "")
    con.print(table)
    con.print(Text("Any module is also reachable as 'module:<dotted.path>:in' or ':out' (paths from the tree above). "
                   "Negative layers count from the end."))
