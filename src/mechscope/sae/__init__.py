"""Sparse autoencoders on activation datasets: train, evaluate, inspect features, SAELens interop.

    sae = mechscope.sae.train("acts/", "blocks.8.hook_mlp_out", "sae/", arch="topk", k=32, expansion=16)
    sae = mechscope.sae.load("sae/")                                     # SAE.load; sae(x), sae.encode, sae.decode
    result = mechscope.sae.evaluate("sae/", "acts/", out="eval/")      # FVU, L0, dead, dense, splice test
    mechscope.sae.features("sae/", "acts/", latents="0-99", out="features/")
    mechscope.sae.export_saelens("sae/", "sae_saelens/");  mechscope.sae.import_saelens("sae_saelens/", "sae2/")
"""
from . import metrics
from .evaluate import evaluate, reconstruction_metrics, splice_test
from .features import features
from .model import SAE, SAEConfig, load
from .saelens import export_saelens, import_saelens
from .train import TrainConfig, train

__all__ = ["SAE", "SAEConfig", "TrainConfig", "train", "load", "evaluate", "reconstruction_metrics", "splice_test",
           "features", "export_saelens", "import_saelens", "metrics"]
