"""A probe sweep's outputs: probe.json, probe.csv, probe.png (accuracy vs layer per site, with the baselines) and
report.html (self-contained: the figure embedded, every text escaped through htmlkit). Every file is written
atomically (fsio)."""
from __future__ import annotations

import base64
import csv
import io
from pathlib import Path

from .. import htmlkit
from ..errors import ConfigError
from ..fsio import write_bytes, write_json, write_text
from .probe import METRICS, ProbeResult

FILES = ("probe.json", "probe.csv", "probe.png", "report.html")


def check_out(out, overwrite: bool) -> Path:
    """Refuse a folder that already holds probe outputs (unless `overwrite`), or a file in the folder's place."""
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise ConfigError(f"out={str(out)!r} is a file. Give a folder.", "out")
    there = [f for f in FILES if (out / f).exists()]
    if there and not overwrite:
        raise ConfigError(f"out={str(out)!r} already holds {', '.join(there)}. Pass --overwrite to replace them, or "
                          "choose another folder.", "out")
    return out


def plot(result: ProbeResult):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(result.kinds)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.4), squeeze=False, sharey=True)
    styles = {"accuracy": ("C0", "-", "probe"), "control_accuracy": ("C3", "--", "control task"),
              "random_model_accuracy": ("C7", ":", "random-init model"), "mean_diff_accuracy": ("C2", "-.",
                                                                                            "difference of means")}
    for ax, kind in zip(axes[0], result.kinds):
        for metric, (colour, ls, label) in styles.items():
            ys = result.sites[kind][metric]
            if all(v is not None for v in ys):
                ax.plot(result.layers, ys, ls, color=colour, marker="o", ms=3, label=label)
        ax.axhline(result.majority_accuracy, color="k", lw=0.8, alpha=0.5, label="majority class")
        ax.set_title(kind)
        ax.set_xlabel("layer")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("held-out accuracy")
    axes[0][-1].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"{result.model}: linear probes ({result.pool} pooling, {result.n_test} held-out texts)",
                 fontsize=10)
    fig.tight_layout()
    return fig


def to_csv(result: ProbeResult) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["site", "layer", *METRICS, "C"], lineterminator="\n")
    w.writeheader()
    w.writerows(result.rows())
    return buf.getvalue()


def write_outputs(result: ProbeResult, out, command: str = "") -> dict:
    """Write the four files into `out` (created); return {name: path}."""
    import matplotlib.pyplot as plt

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fig = plot(result)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    paths = {"probe.json": write_json(out / "probe.json", dict(result.to_json(), command=command)),
             "probe.csv": write_text(out / "probe.csv", to_csv(result)),
             "probe.png": write_bytes(out / "probe.png", buf.getvalue())}
    paths["report.html"] = write_text(out / "report.html", render_html(result, buf.getvalue(), command))
    return paths


def _fmt(x) -> str:
    return "–" if x is None else f"{x:.3f}" if isinstance(x, float) else str(x)


def _ablation_html(ab) -> str:
    if not ab:
        return ("<p class=muted>Not run. With <code>--ablate</code> on a fine-tuned classifier (or a causal LM), the "
                "best layer's probe direction is projected out of the residual stream and the damage measured "
                "against random directions.</p>")
    what = "accuracy" if ab["metric"] == "accuracy" else "mean logit difference (true label word - other)"
    rows = [("site", ab["site"]), ("metric", what), ("labels matched", ab["labels"]), ("held-out texts", ab["n"]),
            ("no intervention", _fmt(ab["baseline"])), ("probe direction removed", _fmt(ab["ablated"])),
            ("drop", _fmt(ab["drop"])), ("random directions removed (each)",
                                         ", ".join(_fmt(v) for v in ab["random_ablated"])),
            ("mean drop, random directions", _fmt(ab["random_drop"]))]
    return htmlkit.table(rows)


def render_html(result: ProbeResult, png: bytes, command: str = "") -> str:
    e = htmlkit.esc
    head = ["site", "layer", "accuracy", "control", "selectivity", "random-init model", "difference of means", "C"]
    rows = [(r["site"], r["layer"], *(_fmt(r[m]) for m in METRICS), _fmt(r["C"])) for r in result.rows()]
    b = result.best
    settings = htmlkit.table([(k, v) for k, v in result.settings.items()], ("setting", "value"))
    body = f"""
<h1>Linear probes: {e(result.model)}</h1>
<p>{e(result.family)} model, {e(result.pool)} pooling, labels {e(', '.join(result.label_names))};
{result.n_train} training and {result.n_test} held-out texts. Majority class: {_fmt(result.majority_accuracy)};
control-task majority: {_fmt(result.control_majority_accuracy)}.</p>
<p><b>Best:</b> {e(b['site'])} at layer {b['layer']}: accuracy {_fmt(b['accuracy'])}, selectivity
{_fmt(b['selectivity'])}.</p>
<img alt="accuracy vs layer" src="data:image/png;base64,{base64.b64encode(png).decode()}">
<h2>Per site and layer (held-out accuracy)</h2>
{htmlkit.table(rows, head)}
<p class=muted>Control: labels from a fixed random map of word types ({e(result.settings.get('control'))}), so
selectivity = accuracy - control accuracy is what the representation offers beyond memorising words
(Hewitt &amp; Liang 2019). The random-init model is the same architecture with fresh weights: accuracy it also
reaches comes from the tokens, not from training. A high accuracy says the label is readable, not that the
model uses it: see the ablation.</p>
<h2>Ablation</h2>
{_ablation_html(result.ablation)}
<h2>Run</h2>
<pre>{e(command)}</pre>
{settings}
<p class=muted>{result.info.get('forwards')} forwards over {result.info.get('tokens')} tokens;
{result.info.get('truncated')} texts truncated; {_fmt(result.info.get('seconds'))} s.</p>
"""
    return htmlkit.page(f"probes: {result.model}", body, css="img{max-width:100%}")
