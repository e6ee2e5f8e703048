"""The comparison's figures (PNG) and its self-contained report.html."""
from __future__ import annotations

import base64
from pathlib import Path

from matplotlib.figure import Figure

COLOURS = {"transformer": "#1f77b4", "lstm": "#d62728", "transformer (no cache)": "#7fb3e0"}
TITLES = {"copy": "Copy across a lag", "induction": "Induction on a repeated random block",
          "parity": "Running parity, trained short, tested longer"}
YLABEL = {"token": "per-token accuracy", "last": "accuracy at the last position", "sequence": "exact examples"}


def _accuracy_figure(task: str, res: dict) -> Figure:
    fig = Figure(figsize=(5.2, 3.4), dpi=110)
    ax = fig.subplots()
    xs = res["test_sizes"]
    lo, hi = res["train_sizes"]
    if max(xs) > hi:
        ax.axvspan(lo, hi, color="#eeeeee", label="training range")
    summary = res["summary"][res["metric"]]
    for name, s in summary.items():
        ax.plot(xs, s["mean"], "o-", color=COLOURS[name], label=f"{name} ({res['params'][name]:,} params)")
        ax.fill_between(xs, s["min"], s["max"], color=COLOURS[name], alpha=0.2)
    ax.set_xlabel(res["size_name"])
    ax.set_ylabel(YLABEL[res["metric"]])
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(TITLES[task] + f"\n(mean and min-max over {len(res['runs']) // 2} seed(s))", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _loss_figure(tasks: dict) -> Figure:
    fig = Figure(figsize=(10, 3), dpi=110)
    axes = fig.subplots(1, len(tasks))
    for ax, (task, res) in zip(axes, tasks.items()):
        for r in res["runs"]:
            ax.plot(r["losses"], color=COLOURS[r["model"]], alpha=0.6, lw=0.8,
                    label=r["model"] if r["seed"] == 0 else None)
        ax.set_title(task, fontsize=9)
        ax.set_yscale("log")
        ax.set_xlabel("logged step")
    axes[0].set_ylabel("training loss")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def _curves(title: str, xs, series: dict, ylabel: str, xlabel: str) -> Figure:
    fig = Figure(figsize=(5.2, 3.4), dpi=110)
    ax = fig.subplots()
    for name, ys in series.items():
        ax.plot(xs, ys, "o-", color=COLOURS.get(name, "#555555"), label=name)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def figures(results: dict) -> dict:
    """file name -> matplotlib Figure, for every curve of the run."""
    t = results["timing"]
    figs = {f"{task}.png": _accuracy_figure(task, res) for task, res in results["tasks"].items()}
    figs["loss.png"] = _loss_figure(results["tasks"])
    figs["train_step.png"] = _curves(f"Training step (batch {t['batch']})", t["lengths"], t["train_step_s"],
                                     "seconds per step (median)", "sequence length")
    figs["generation.png"] = _curves("Greedy generation (batch 1)", t["lengths"], t["generate_s_per_token"],
                                     "seconds per new token", "context length")
    figs["activation_memory.png"] = _curves(f"Activations saved for backward (batch {t['batch']})", t["lengths"],
                                            t["activation_bytes"], "bytes", "sequence length")
    figs["state_memory.png"] = _curves("State carried between generated tokens", t["lengths"], t["state_bytes"],
                                       "bytes (KV cache vs (h, c))", "context length")
    return figs


def _fmt(v) -> str:
    return "–" if v is None else f"{v:.2f}"


def _task_table(res: dict) -> str:
    from ..htmlkit import table

    rows = []
    for i, size in enumerate(res["test_sizes"]):
        inside = res["train_sizes"][0] <= size <= res["train_sizes"][1]
        row = [size, "yes" if inside else "no"]
        for name in ("transformer", "lstm"):
            s = res["summary"][res["metric"]][name]
            row.append(f"{_fmt(s['mean'][i])} [{_fmt(s['min'][i])}–{_fmt(s['max'][i])}]")
        rows.append(row)
    return table(rows, [res["size_name"], "in training range", "Transformer", "LSTM"])


def findings(results: dict) -> list:
    """One plain sentence per task: who is ahead inside and outside the training range (means over seeds)."""
    out = []
    for task, res in results["tasks"].items():
        s = res["summary"][res["metric"]]
        lo, hi = res["train_sizes"]
        for label, keep in (("inside", lambda x: lo <= x <= hi), ("beyond", lambda x: x > hi)):
            idx = [i for i, x in enumerate(res["test_sizes"]) if keep(x) and s["transformer"]["mean"][i] is not None]
            if not idx:
                continue
            m = {n: sum(s[n]["mean"][i] for i in idx) / len(idx) for n in ("transformer", "lstm")}
            lead = max(m, key=m.get) if abs(m["transformer"] - m["lstm"]) >= 0.02 else None
            verdict = f"the {lead} is ahead" if lead else "the two are level"
            out.append(f"{TITLES[task]}, {res['size_name']} {label} the training range ({lo}–{hi}): "
                       f"{verdict} ({YLABEL[res['metric']]}: Transformer {m['transformer']:.2f}, "
                       f"LSTM {m['lstm']:.2f}).")
    return out


def _timing_table(t: dict) -> str:
    from ..htmlkit import table

    names = list(t["generate_s_per_token"])
    rows = []
    for i, n in enumerate(t["lengths"]):
        row = [n] + [f"{1e3 * t['train_step_s'][m][i]:.1f}" for m in ("transformer", "lstm")]
        row += [f"{1e3 * t['generate_s_per_token'][m][i]:.2f}" for m in names]
        row += [f"{t['activation_bytes'][m][i] / 2**20:.2f}" for m in ("transformer", "lstm")]
        row += [f"{t['state_bytes'][m][i] / 2**10:.1f}" for m in ("transformer", "lstm")]
        rows.append(row)
    head = (["length", "train step ms: Transformer", "LSTM"] + [f"ms/token: {m}" for m in names]
            + ["activations MiB: Transformer", "LSTM", "state KiB: KV cache", "(h, c)"])
    return table(rows, head)


def report_html(results: dict, pngs: dict) -> str:
    from ..htmlkit import esc, page

    t = results["timing"]
    cfg = results["config"]
    imgs = lambda names: "".join(  # noqa: E731
        f'<img alt="{esc(n)}" src="data:image/png;base64,{base64.b64encode(pngs[n]).decode()}">' for n in names)
    body = [f"<h1>Transformer vs LSTM</h1><p>Parameter-matched causal models, trained with the same optimizer "
            f"(AdamW, lr {esc(cfg['lr'])}, warm-up and cosine decay), the same batches and {esc(cfg['steps'])} "
            f"steps, over {esc(cfg['seeds'])} seed(s). Transformer: {esc(cfg['n_layers'])} pre-norm blocks, width "
            f"{esc(cfg['d_model'])}, {esc(cfg['n_heads'])} heads; LSTM: {esc(cfg['n_layers'])} layers, hidden size "
            f"chosen to match the parameter count.</p>",
            "<h2>Findings</h2><ul>" + "".join(f"<li>{esc(f)}</li>" for f in findings(results)) + "</ul>"]
    for task, res in results["tasks"].items():
        p = res["params"]
        body.append(f"<h2>{esc(TITLES[task])}</h2><p class='muted'>Parameters: Transformer {p['transformer']:,}, "
                    f"LSTM {p['lstm']:,} (hidden {p['lstm_hidden']}). Cells: mean [min–max] over seeds of the "
                    f"{esc(YLABEL[res['metric']])}.</p>{_task_table(res)}{imgs([task + '.png'])}")
    body.append(f"<h2>Training loss</h2>{imgs(['loss.png'])}")
    body.append(f"<h2>Cost against sequence length</h2><p class='muted'>Parameters: Transformer "
                f"{t['params']['transformer']:,}, LSTM {t['params']['lstm']:,}; {t['threads']} CPU thread(s); "
                f"training batch {t['batch']}; generation batch 1, {t['new_tokens']} new tokens timed after the "
                f"prompt.</p>{_timing_table(t)}"
                + imgs(["train_step.png", "generation.png", "activation_memory.png", "state_memory.png"]))
    body.append("<h2>Caveats</h2><ul>" + "".join(f"<li>{esc(c)}</li>" for c in results["caveats"]) + "</ul>")
    body.append(f"<h2>Run</h2><pre id='command'>{esc(results.get('command') or '')}</pre>"
                f"<p class='muted'>{esc(results['environment'])}; {results['seconds']:.0f} s.</p>")
    return page("Transformer vs LSTM", "\n".join(body), css="img{max-width:560px;margin:6px;vertical-align:top}")


def write_report(results: dict, out: Path) -> dict:
    """Save every figure as PNG and report.html into `out`; returns file name -> path."""
    import io

    from ..fsio import write_bytes, write_text

    pngs = {}
    for name, fig in figures(results).items():
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        pngs[name] = buf.getvalue()
    paths = {name: write_bytes(Path(out) / name, data) for name, data in pngs.items()}
    paths["report.html"] = write_text(Path(out) / "report.html", report_html(results, pngs))
    return paths
