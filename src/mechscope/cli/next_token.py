"""`mechscope next-token`: the most likely next tokens after a prompt."""
from __future__ import annotations

import click

from . import common


@click.command("next-token")
@click.argument("prompt")
@click.option("--top-k", "-k", default=20, show_default=True, type=int, help="How many tokens to list.")
@common.model_options
@common.json_option
def next_token_cmd(prompt, top_k, model_name, dtype, device, as_json):
    """List the top-k next tokens after PROMPT with their probability and logit (one forward pass).

    \b
    Columns: Rank (1 = most likely), Token id, Token, Probability, Logit;
    JSON rows: {rank, id, token, logit, prob} (the schema of the patching results' top tokens).
    Example:
      mechscope next-token "The capital of France is" --top-k 5
    """
    from rich.table import Table

    from ..next_token import check_top_k, next_token_table

    common.require_text("PROMPT", prompt)
    check_top_k(top_k)
    common.check_model_args(dtype, device)
    model = common.load_model(model_name, dtype, device)
    rows = next_token_table(model, prompt, top_k)
    if as_json:
        common.emit_json({"prompt": prompt, "top_k": top_k, "rows": rows})
        return
    common.line(f"Next token after {prompt!r}")  # a title, never wrapped
    table = Table()
    for col in ("Rank", "Token id", "Token", "Probability", "Logit"):
        table.add_column(col, justify="left" if col == "Token" else "right")
    for r in rows:
        table.add_row(str(r["rank"]), str(r["id"]), common.show_token(r["token"]), f"{r['prob']:.4f}",
                      f"{r['logit']:.3f}")
    common.console().print(table)
