"""Options and helpers shared by the commands."""
from __future__ import annotations

import json
import os
import sys
from typing import Optional

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
                      help="Hub id (gpt2, meta-llama/Llama-3.2-1B), local folder, .gguf file, 'default' (the "
                      "embedded SmolLM2-135M-Instruct: its Q4_1 GGUF dequantized to fp32), or 'minilm' (the "
                      "embedded encoder).")(fn)
    return fn


def json_option(fn):
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables (errors too).")(fn)


def verbose() -> bool:
    """Whether `mechscope --verbose` was given (Hugging Face logs and progress bars shown while loading)."""
    ctx = click.get_current_context(silent=True)
    return bool(ctx and (ctx.find_root().obj or {}).get("verbose"))


def default_threads() -> Optional[int]:
    """torch's CPU threads when --threads is not given: None (torch's own choice) if OMP_NUM_THREADS is set, else
    min(4, available cores). Small models gain little from more threads, and a busy machine loses a lot."""
    if os.environ.get("OMP_NUM_THREADS"):
        return None
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(4, cores))




def check_model_args(dtype: str, device: str) -> None:
    """--dtype and --device checked before any model loads (they need none)."""
    from ..devices import resolve_device, resolve_dtype

    resolve_dtype(dtype, resolve_device(device))


def load_model(model_name: str, dtype: str, device: str):
    """Load with Hugging Face's logs and progress bars silenced for the load (unless `mechscope --verbose`)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from ..loading import load

    return load(model_name, dtype=dtype, device=device, quiet=not verbose())


def emit_json(obj) -> None:
    click.echo(json.dumps(json_safe(obj, infinity=1e308), indent=2, ensure_ascii=False))


def console():
    from rich.console import Console

    return Console(file=sys.stdout, width=max(100, int(os.environ.get("COLUMNS", 100))), soft_wrap=False)


def line(text: str, style: Optional[str] = None) -> None:
    """One line printed verbatim (never wrapped at the console width; bold etc. only on a terminal)."""
    click.echo(click.style(text, bold=True) if style == "bold" else text)
