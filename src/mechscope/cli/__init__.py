"""The `mechscope` command line. One module per command; each command's docstring is its --help."""
from __future__ import annotations

import json
import sys

import click

from ..errors import MechscopeError, flag_name
from .common import default_threads


class Group(click.Group):
    """The root group: turns a MechscopeError anywhere below into one paragraph on stderr (with --json: a JSON
    object {"error", "argument"} on stdout) and exit code 2, without a traceback; a Ctrl-C into one line and exit
    code 130. The thread count set by --threads is restored afterwards (the CLI also runs in-process in tests)."""

    def invoke(self, ctx):
        as_json = "--json" in ctx.args[: ctx.args.index("--")] if "--" in ctx.args else "--json" in ctx.args
        try:
            return super().invoke(ctx)
        except MechscopeError as err:
            _fail(str(err), flag_name(getattr(err, "argument", None)), as_json)
        except click.UsageError as err:
            if not as_json:
                raise
            param = getattr(err, "param", None)
            name = (param.opts[0] if getattr(param, "opts", None) else getattr(param, "name", None)) if param else None
            _fail(err.format_message(), name or getattr(err, "option_name", None), True)
        except KeyboardInterrupt:
            click.echo("Interrupted (Ctrl-C).", err=True)
            sys.exit(130)
        finally:
            before = (ctx.obj or {}).get("threads_before")
            if before:
                import torch

                torch.set_num_threads(before)


def _fail(message: str, argument, as_json: bool):
    if as_json:
        click.echo(json.dumps({"error": message, "argument": argument}, ensure_ascii=False))
    else:  # the library names its Python argument; the CLI adds the flag when the message does not say it
        flag = f" ({argument})" if argument and argument not in message else ""
        click.echo(f"Error{flag}: {message}", err=True)
    sys.exit(2)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="mechscope")
@click.option("--threads", type=click.IntRange(min=1), default=None, envvar="MECHSCOPE_THREADS",
              help="CPU threads for torch [default: OMP_NUM_THREADS if set, else min(4, available cores)]. On a "
              "busy machine --threads 1 can be many times faster.")
@click.option("--verbose", "-v", is_flag=True, help="Show Hugging Face's log messages and progress bars "
              "(\"Loading weights\") while models load.")
@click.pass_context
def main(ctx, threads, verbose):
    """mechscope: look inside transformer language models.

    Every command that reads a model takes --model (default: the embedded SmolLM2-135M-Instruct, its Q4_1 GGUF
    dequantized to fp32; or a hub id, a local folder, a .gguf file), --dtype and --device, and prints a table, or
    JSON with --json (errors too: {"error": ..., "argument": ...} on stdout, exit code 2).

    Options before the command: --threads N (torch's CPU threads; OMP_NUM_THREADS=N works too) and --verbose.
    Manual: docs/.
    """
    ctx.ensure_object(dict)
    ctx.obj["verbose"] = verbose
    if ctx.resilient_parsing or any(a in ("--help", "-h") for a in ctx.args):
        return
    n = threads or default_threads()
    if n:
        import torch

        ctx.obj["threads_before"] = torch.get_num_threads()
        torch.set_num_threads(n)


# One import and one line per command. Add a command by adding a module and a pair of lines here.
from .attention import attention_cmd  # noqa: E402
from .extract import extract_cmd  # noqa: E402
from .finetune import finetune_cmd  # noqa: E402
from .generate import generate_cmd  # noqa: E402
from .heads import heads_cmd  # noqa: E402
from .inspect import inspect_cmd  # noqa: E402
from .lab import lab  # noqa: E402
from .lens import lens_cmd  # noqa: E402
from .next_token import next_token_cmd  # noqa: E402
from .patch import patch_cmd  # noqa: E402
from .probe import probe_cmd  # noqa: E402
from .sae import sae_group  # noqa: E402
from .sentiment_data import sentiment_data_cmd  # noqa: E402
from .tokenize import tokenize_cmd  # noqa: E402

for _cmd in (inspect_cmd, tokenize_cmd, generate_cmd, next_token_cmd, lens_cmd, patch_cmd, extract_cmd, sae_group,
             sentiment_data_cmd, attention_cmd, heads_cmd, lab, finetune_cmd, probe_cmd):
    main.add_command(_cmd)
