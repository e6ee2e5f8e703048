"""`mechscope tokenize`: how the model's tokenizer splits a text."""
from __future__ import annotations

import click

from . import common


@click.command("tokenize")
@click.argument("text")
@common.model_options
@common.json_option
def tokenize_cmd(text, model_name, dtype, device, as_json):
    """Show the tokens the model reads for TEXT: position, token id and text piece (special tokens such as BOS
    included; spaces shown as '·'). JSON rows: {position, id, token (decoded text), piece (vocabulary entry)}.

    \b
    Example:
      mechscope tokenize "The capital of France is"
    """
    from rich.table import Table

    from ..tokenization import tokenize_table

    common.require_text("TEXT", text)
    common.check_model_args(dtype, device)
    model = common.load_model(model_name, dtype, device)
    rows = tokenize_table(model, text)
    if as_json:
        common.emit_json({"text": text, "n_tokens": len(rows), "tokens": rows})
        return
    table = Table(title=f"{len(rows)} tokens", title_justify="left")
    table.add_column("position", justify="right")
    table.add_column("token id", justify="right")
    table.add_column("text piece")
    for r in rows:
        table.add_row(str(r["position"]), str(r["id"]), common.show_token(r["token"]))
    common.console().print(table)
