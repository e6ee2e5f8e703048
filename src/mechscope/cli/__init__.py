"""The `mechscope` command line. One module per command; each command's docstring is its --help."""
from __future__ import annotations

import importlib
import sys

import click

from ..errors import MechscopeError

# (module in mechscope.cli, click command attribute). Add a command by adding a module and a line here.
COMMANDS = [
    ("inspect", "inspect_cmd"),
    ("tokenize", "tokenize_cmd"),
    ("generate", "generate_cmd"),
    ("next_token", "next_token_cmd"),
    ("lens", "lens_cmd"),
    ("patch", "patch_cmd"),
    ("extract", "extract_cmd"),
    ("sae", "sae_group"),
    ("sentiment_data", "sentiment_data_cmd"),
    ("attention", "attention_cmd"),
    ("heads", "heads_cmd"),
    ("lab", "lab"),
    ("finetune", "finetune_cmd"),
    ("probe", "probe_cmd"),
]


class Group(click.Group):
    """Turns a MechscopeError anywhere below into one paragraph on stderr and exit code 2 (no traceback)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except MechscopeError as err:
            click.echo(f"Error: {err}", err=True)
            sys.exit(2)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="mechscope")
def main():
    """mechscope: look inside transformer language models.

    Every command takes --model (default: the embedded SmolLM2-135M-Instruct; or a hub id, a local folder, a .gguf
    file), --dtype and --device, and prints a table, or JSON with --json.
    """


for _module, _attr in COMMANDS:
    try:
        _mod = importlib.import_module(f"{__name__}.{_module}")
    except ModuleNotFoundError as _err:  # a command whose module is not written yet
        if _err.name != f"{__name__}.{_module}":
            raise
        continue
    main.add_command(getattr(_mod, _attr))
