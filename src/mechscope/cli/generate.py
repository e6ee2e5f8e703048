"""`mechscope generate`: continue a prompt (greedy or sampled, optionally through the chat template)."""
from __future__ import annotations

import click

from . import common


@click.command("generate")
@click.argument("prompt")
@click.option("--max-new-tokens", "-n", default=32, show_default=True, type=int, help="Tokens to generate at most.")
@click.option("--greedy", is_flag=True, help="Always pick the most likely token (the default unless sampling "
              "options are given).")
@click.option("--temperature", "-t", type=float, default=None, help="Sample with this temperature (> 0).")
@click.option("--top-p", type=float, default=None, help="Sample from the smallest set of tokens with this total "
              "probability (0 < p <= 1).")
@click.option("--seed", type=int, default=None, help="Random seed: the same seed gives the same sample.")
@click.option("--chat", is_flag=True, help="Wrap PROMPT as a user turn in the tokenizer's chat template.")
@common.model_options
@common.json_option
def generate_cmd(prompt, max_new_tokens, greedy, temperature, top_p, seed, chat, model_name, dtype, device,
                 as_json):
    """Generate a continuation of PROMPT with the model's own `generate`.

    Greedy by default; --temperature, --top-p or --seed switch to sampling (reproducible with --seed).
    --chat applies the chat template (instruction-tuned models such as the default one).

    \b
    Example:
      mechscope generate "Once upon a time" --max-new-tokens 20
      mechscope generate "What is the capital of France?" --chat
      mechscope generate "Once upon a time" --temperature 0.8 --top-p 0.9 --seed 0
    """
    from ..generation import check_settings, generate

    common.require_text("PROMPT", prompt)
    check_settings(max_new_tokens, greedy or None, temperature, top_p)
    common.check_model_args(dtype, device)
    model = common.load_model(model_name, dtype, device)
    out = generate(model, prompt, max_new_tokens, greedy=greedy or None, temperature=temperature, top_p=top_p,
                   seed=seed, chat=chat)
    if as_json:
        common.emit_json(out)
        return
    # verbatim: no wrapping at the terminal width (a newline here would be one the model never produced)
    click.echo(out["completion"] if chat else click.style(prompt, bold=True) + out["completion"])
