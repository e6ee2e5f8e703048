"""Checks made before any work: prompt pairs of equal token length, valid kinds and choices; spec files.

(Single-token answers: `mechscope.tokens.single_token_id`; index lists: `mechscope.indices.parse_index_list`.)
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence, Union

from ..errors import ConfigError, DataError, SiteError
from ..tokens import require_text

KINDS = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "z")
SITES = KINDS  # deprecated name: these are site kinds, not site names
DIRECTIONS = ("denoise", "noise")
METHODS = ("exact", "attribution")


def _piece(model, tid: int) -> str:
    return repr(model.tokenizer.decode([int(tid)]))


def side_by_side(model, clean_ids: Sequence[int], corrupt_ids: Sequence[int]) -> str:
    """Both tokenizations as a table (index, id, piece) with '<<' on the rows that differ."""
    n = max(len(clean_ids), len(corrupt_ids))
    rows = []
    for i in range(n):
        c = (str(clean_ids[i]), _piece(model, clean_ids[i])) if i < len(clean_ids) else ("", "")
        k = (str(corrupt_ids[i]), _piece(model, corrupt_ids[i])) if i < len(corrupt_ids) else ("", "")
        differ = i >= len(clean_ids) or i >= len(corrupt_ids) or clean_ids[i] != corrupt_ids[i]
        rows.append((str(i), c[0], c[1], k[0], k[1], "<< differs" if differ else ""))
    head = ("index", "clean id", "clean piece", "corrupt id", "corrupt piece", "")
    widths = [max(len(r[j]) for r in rows + [head]) for j in range(6)]
    fmt = lambda r: "  ".join(x.ljust(w) for x, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([fmt(head)] + [fmt(r) for r in rows])


def check_pair(model, clean: str, corrupt: str) -> tuple[list[int], list[int]]:
    """Token ids of both prompts; a ConfigError with both tokenizations side by side if the lengths differ."""
    require_text("clean", clean)
    require_text("corrupt", corrupt)
    ci, ki = model.encode(clean), model.encode(corrupt)
    if len(ci) != len(ki):
        raise ConfigError(
            f"The clean prompt has {len(ci)} tokens and the corrupted prompt {len(ki)}: activation patching swaps "
            "activations position by position, so both must have the same number of tokens. Change the wording so the "
            "differing words take the same number of tokens (rows marked '<<' differ):\n" + side_by_side(model, ci, ki), "corrupt")
    n_ctx = model.cfg.n_ctx
    if n_ctx and len(ci) > n_ctx:
        raise ConfigError(f"The prompts are {len(ci)} tokens long; this model reads at most {n_ctx}.", "clean")
    return ci, ki


def check_choice(argument: str, value: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ConfigError(f"{argument}={value!r} is not valid. Choose one of: {', '.join(choices)}.", argument)
    return value


def check_kind(model, kind: str) -> str:
    if kind not in KINDS:
        hint = (" (a full site name; a sweep takes its kind, e.g. 'resid_post' for blocks.3.hook_resid_post)"
                if "." in str(kind) or str(kind).startswith("hook_") else "")
        raise SiteError(f"kind={kind!r} is not a patching kind{hint}. Choose one of: {', '.join(KINDS)}.", "kind")
    if kind == "resid_mid" and model.adapter.resid_mid is None:
        raise SiteError(
            f"kind resid_mid does not exist on {model.cfg.family} models (attention and MLP run in parallel). "
            "Use resid_pre, resid_post, attn_out, mlp_out or z.", "kind")
    if not model.adapter.causal:
        raise ConfigError(
            f"Patching sweeps read the next-token prediction of a causal language model; {model.name} is a "
            f"{model.cfg.family} encoder. Use a causal LM (gpt2, llama, mistral, qwen2, phi3, gpt_neox).", "model")
    return kind


def load_spec(path: Union[str, Path]) -> dict:
    """A YAML spec: optional defaults (kind, metric, direction, method, layers, positions) and `pairs`, each with
    `clean`, `corrupt` and `answers: [A, B]` (`tokens:` and `site:` are the deprecated key names)."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise DataError(f"spec={str(path)!r}: no such file.", "spec")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise DataError(f"spec={str(path)!r} is not valid YAML: {err}", "spec") from None
    if isinstance(data, list):
        data = {"pairs": data}
    if not isinstance(data, dict) or not isinstance(data.get("pairs"), list) or not data["pairs"]:
        raise DataError(
            f"spec={str(path)!r} must hold a list `pairs:` of entries with clean, corrupt and answers, e.g.\n"
            "pairs:\n  - clean: \"Michelle Jones was a top-notch student. Michelle\"\n"
            "    corrupt: \"Michelle Smith was a top-notch student. Michelle\"\n    answers: [\" Smith\", \" Jones\"]",
            "spec")
    for i, pair in enumerate(data["pairs"]):
        if isinstance(pair, dict) and "answers" not in pair and "tokens" in pair:
            pair["answers"] = pair.pop("tokens")
        if not isinstance(pair, dict) or not {"clean", "corrupt", "answers"} <= set(pair):
            raise DataError(f"spec={str(path)!r}: pair {i} needs the keys clean, corrupt and answers.", "spec")
        answers = [pair["answers"]] if isinstance(pair["answers"], str) else pair["answers"]
        if not isinstance(answers, list) or not 1 <= len(answers) <= 2:
            raise DataError(f"spec={str(path)!r}: pair {i} answers must be a list [A, B] (or [A]).", "spec")
        pair["answers"] = answers
    if "site" in data and "kind" not in data:
        data["kind"] = data.pop("site")
    return data
