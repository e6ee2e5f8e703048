"""Activation patching: exact sweeps (batched variants, no recomputation before the patched layer), attribution
patching with exact verification, heatmaps and a self-contained HTML report.

    from mechscope import load, patching
    res = patching.sweep(load(), "Michelle Jones was a top-notch student. Michelle",
                         "Michelle Smith was a top-notch student. Michelle", tokens=(" Smith", " Jones"))
    res.matrix, res.to_json(), res.plot("heatmap.png"), res.save("out/patching")
"""
from .exact import Cell, exact_cells, naive_cells, record
from .attribution import attribution_cells
from .metrics import METRICS, Metric, make_metric
from .sweep import PatchResult, RESULT_FIELDS, mean_result, sweep, sweep_spec
from .validate import SITES, load_spec

__all__ = ["sweep", "sweep_spec", "mean_result", "PatchResult", "RESULT_FIELDS", "METRICS", "Metric", "make_metric",
           "SITES", "load_spec", "Cell", "exact_cells", "naive_cells", "record", "attribution_cells"]
