"""`mechscope lab rnn-vs-transformer`: train a parameter-matched Transformer and LSTM on the same tasks, time both."""
from __future__ import annotations

import shlex
from dataclasses import replace
from pathlib import Path

import click

from ..errors import ConfigError


@click.command("rnn-vs-transformer")
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for results.json, the PNG curves and report.html (created if missing).")
@click.option("--quick", is_flag=True, help="The few-minute preset (2 seeds, 400 steps, shorter sequences) "
              "instead of the full run (3 seeds, 800 steps).")
@click.option("--seeds", type=int, default=None, help="Override the preset's number of seeds.")
@click.option("--steps", type=int, default=None, help="Override the preset's training steps per model and task.")
def rnn_cmd(out, quick, seeds, steps):
    """Transformer vs LSTM, measured: accuracy on three tasks, and cost against sequence length.

    Both models are small causal language models with (nearly) the same number of parameters, trained with the
    same optimizer, batches and step budget, once per seed, on: copying symbols across a lag (accuracy against
    the lag), induction on a repeated random block, and running parity trained on short strings and tested on
    longer ones. Then each is timed against the sequence length: a training step, a generated token (KV cache vs
    recurrent state, and the Transformer without a cache), and the memory each keeps (activations saved for
    backward; the generation state). Runs on the CPU; the full run takes tens of minutes, --quick a few.

    Writes OUT/results.json, OUT/*.png and OUT/report.html (with the caveats).

    \b
    Example:
      mechscope lab rnn-vs-transformer --out out/rnn --quick
    """
    from ..lab.rnn_report import findings
    from ..lab.rnn_vs_transformer import Config, run

    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {str(out)!r} is a file. Give a folder (it is created if missing).", "out")
    cfg = Config.quick() if quick else Config.full()
    for name, value in (("seeds", seeds), ("steps", steps)):
        if value is not None:
            if value < 1:
                raise ConfigError(f"--{name} {value} must be at least 1.", name)
            cfg = replace(cfg, **{name: value})
    command = " ".join(["mechscope lab rnn-vs-transformer --out", shlex.quote(str(out))] + ["--quick"] * quick
                       + [f"--{n} {v}" for n, v in (("seeds", seeds), ("steps", steps)) if v is not None])
    results = run(out, cfg, log=lambda msg: click.echo(msg, err=True), command=command)
    for line in findings(results):
        click.echo(line)
    click.echo(f"report: {out / 'report.html'}")
