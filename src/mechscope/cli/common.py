"""Options and helpers shared by the commands."""
from __future__ import annotations

import json
import os
import sys

import click

from ..jsonsafe import json_safe
from ..tokens import require_text, show_token  # noqa: F401  (the commands use them as common.*)


def model_options(fn):
    """--model, --dtype, --device: every command that loads a model takes these."""
    fn = click.option("--device", default="auto", show_default=True,
                      help="cpu, cuda, cuda:N, mps or auto.")(fn)
    fn = click.option("--dtype", default="auto", show_default=True,
                      help="fp32, fp16, bf16 or auto (bf16 on a GPU that supports it, else fp32).")(fn)
    fn = click.option("--model", "-m", "model_name", default="default", show_default=True,
                      help="Hub id (gpt2, meta-llama/Llama-3.2-1B), local folder, .gguf file, 'default', or "
                      "'minilm' (the embedded encoder).")(fn)
    return fn


def json_option(fn):
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")(fn)


def load_model(model_name: str, dtype: str, device: str):
    """Load quietly (no progress bars on stdout); errors become MechscopeError."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    from ..loading import load

    return load(model_name, dtype=dtype, device=device)


def emit_json(obj) -> None:
    click.echo(json.dumps(json_safe(obj, infinity=1e308), indent=2, ensure_ascii=False))


def console():
    from rich.console import Console

    return Console(file=sys.stdout, width=max(100, int(os.environ.get("COLUMNS", 100))), soft_wrap=False)
