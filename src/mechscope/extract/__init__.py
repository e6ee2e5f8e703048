"""Corpus -> activation dataset: exact, streaming, resumable, loadable with `datasets`, pushable to the Hub.

    mechscope.extract(model, sites, input, out, ...)  -> summary dict   (api.py: plan + run in one call)
    p = plan(ExtractConfig(sites=..., input=..., out=...)); run(p, model)  (the same in two steps; plan loads no model)
    mechscope.ActivationDataset(out)                                    (dataset.py)

Modules: config (ExtractConfig: every setting; Settings: resolved against the model), sources (input readers), chunks (documents -> chunks, resume state), pipeline (batched forward + writer
thread), storage (layout, atomic writes, consolidation, dataset card), ray_engine (Ray Data), hub (push_to_hub).
"""
from .api import Plan, extract, plan, run
from .config import ExtractConfig, Settings
from .dataset import ActivationDataset

__all__ = ["extract", "plan", "run", "Plan", "ExtractConfig", "Settings", "ActivationDataset"]
