"""`mechscope tokenize`: how the model's tokenizer splits a text."""
from __future__ import annotations

import click

from . import common


@click.command("tokenize")
@click.argument("text")
@common.model_options
@common.json_option
def tokenize_cmd(text, model_name, dtype, device, as_json):
    """Show the tokens the model reads for TEXT: index, token id and text piece (special tokens such as BOS
    included; spaces shown as '·').

    \b
    Example:
      mechscope tokenize "The capital of France is"
    """
    from rich.table import Table

    from ..analysis import tokenize_table

    common.require_text("TEXT", text)
    model = common.load_model(model_name, dtype, device)
    rows = tokenize_table(model, text)
    if as_json:
        common.emit_json({"text": text, "n_tokens": len(rows), "tokens": rows})
        return
    table = Table(title=f"{len(rows)} tokens", title_justify="left")
    table.add_column("index", justify="right")
    table.add_column("token id", justify="right")
    table.add_column("text piece")
    for r in rows:
        table.add_row(str(r["index"]), str(r["id"]), common.show_token(r["text"]))
    common.console().print(table)
