"""mechscope: mechanistic interpretability on real Hugging Face modules.

Public API:
    load(model=None, *, dtype, device, revision, trust_remote_code, quiet) -> Model
    save(model, folder)
    Model.run(prompts, capture=[sites], patch={site: tensor_or_fn}, logits=True, padding_side="right")
        -> (logits, ActivationCache)
    interventions: replace, add, zero_ablate, mean_ablate, mean_over_tokens
    sites: SITE_DOC (names and shapes), Site
    MechscopeError: bad input, one clear paragraph
    describe, tokenize_table, generate, next_token_table, logit_lens, plot_lens: what inspect, tokenize,
        generate, next-token and lens compute (modules inspection, tokenization, generation, next_token, lens)
    patching: activation-patching sweeps (patching.sweep, exact and attribution)
    extract(model, sites, input, out, ...) -> summary; ActivationDataset(out): read an activation dataset
    sae: sparse autoencoders (sae.train, sae.evaluate, sae.features, sae.export_saelens, sae.import_saelens)
"""
from . import interventions
from .hooks import ActivationCache, Batch
from .errors import MechscopeError
from .extract import ActivationDataset, extract
from .generation import generate
from .inspection import describe
from .interventions import add, mean_ablate, mean_over_tokens, replace, zero_ablate
from .lens import LensResult, logit_lens, plot_lens
from .loading import load, save
from .model import Model, ModelConfig
from .next_token import next_token_table
from .sites import SITE_DOC, Site
from .tokenization import tokenize_table
from .version import __version__
from . import patching, sae  # noqa: E402  (they build on the modules above)


__all__ = [
    "load", "save", "Model", "ModelConfig", "ActivationCache", "Batch", "Site", "SITE_DOC", "MechscopeError",
    "interventions", "replace", "add", "zero_ablate", "mean_ablate", "mean_over_tokens", "__version__",
    "describe", "tokenize_table", "generate", "next_token_table", "logit_lens", "plot_lens", "LensResult",
    "patching", "extract", "ActivationDataset", "sae",
]
