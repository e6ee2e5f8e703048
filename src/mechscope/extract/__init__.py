"""Corpus -> activation dataset: exact, streaming, resumable, loadable with `datasets`, pushable to the Hub.

    mechscope.extract(model, sites, input, out, ...)  -> summary dict   (api.py)
    mechscope.ActivationDataset(out)                                    (dataset.py)

Modules: sources (input readers), chunks (documents -> chunks, resume state), pipeline (batched forward + writer
thread), storage (layout, atomic writes, consolidation, dataset card), ray_engine (Ray Data), hub (push_to_hub).
"""
from .api import extract
from .dataset import ActivationDataset

__all__ = ["extract", "ActivationDataset"]
