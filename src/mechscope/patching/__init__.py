"""Activation patching: exact sweeps (batched variants, no recomputation before the patched layer), attribution
patching with exact verification, heatmaps and a self-contained HTML report. Manual: docs/patching.md.

    from mechscope import load, patching
    res = patching.sweep(load(), "Michelle Jones was a top-notch student. Michelle",
                         "Michelle Smith was a top-notch student. Michelle", answers=(" Smith", " Jones"))
    res.matrix, res.to_json(), patching.plot_heatmap(res, "heatmap.png"), patching.save_result(res, "out/patching")
"""
from .attribution import attribution_cells
from .exact import Cell, exact_cells, naive_cells, record
from .experiment import mean_result, prepare, prepare_spec, sweep, sweep_spec
from .metrics import METRICS, Metric, make_metric
from .plot import plot_heatmap
from .report import save_result
from .result import RESULT_FIELDS, PatchResult
from .validate import KINDS, SITES, load_spec

__all__ = ["sweep", "sweep_spec", "prepare", "prepare_spec", "mean_result", "PatchResult", "RESULT_FIELDS",
           "save_result", "plot_heatmap", "METRICS", "Metric", "make_metric", "KINDS", "SITES", "load_spec", "Cell",
           "exact_cells", "naive_cells", "record", "attribution_cells"]
