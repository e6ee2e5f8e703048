"""Checks made before any work: prompt pairs of equal token length, single-token answers, valid sites; spec files."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Union

from ..errors import MechscopeError

SITES = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "z")
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
    """Token ids of both prompts; a MechscopeError with both tokenizations side by side if the lengths differ."""
    for name, text in (("clean", clean), ("corrupt", corrupt)):
        if text is None or not str(text).strip():
            raise MechscopeError(f"The {name} prompt is empty ({text!r}). Give at least one character of text.")
    ci, ki = model.encode(clean), model.encode(corrupt)
    if len(ci) != len(ki):
        raise MechscopeError(
            f"The clean prompt has {len(ci)} tokens and the corrupted prompt {len(ki)}: activation patching swaps "
            "activations position by position, so both must have the same number of tokens. Change the wording so the "
            "differing words take the same number of tokens (rows marked '<<' differ):\n" + side_by_side(model, ci, ki))
    n_ctx = model.cfg.n_ctx
    if n_ctx and len(ci) > n_ctx:
        raise MechscopeError(f"The prompts are {len(ci)} tokens long; this model reads at most {n_ctx}.")
    return ci, ki


def check_token(model, text: Union[str, int], role: str = "A") -> int:
    """The single token id of `text`; an error listing its pieces (and the leading-space variant) otherwise."""
    if isinstance(text, int):
        if not 0 <= text < model.cfg.d_vocab:
            raise MechscopeError(f"Token {role} id {text} is out of range (vocabulary of {model.cfg.d_vocab}).")
        return text
    if text is None or text == "":
        raise MechscopeError(f"Token {role} is empty. Give the answer token's text, e.g. ' Smith' (with its space).")
    ids = model.tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) == 1:
        return int(ids[0])
    pieces = ", ".join(f"{int(i)}={_piece(model, i)}" for i in ids) or "none"
    msg = (f"Token {role} {text!r} is not a single token: it tokenizes into {len(ids)} pieces ({pieces}). The metric "
           "reads one next-token logit, so A and B must each be one token.")
    if not text.startswith(" "):
        alt = model.tokenizer(" " + text, add_special_tokens=False)["input_ids"]
        if len(alt) == 1:
            msg += f" Its variant with a leading space, {' ' + text!r}, is a single token (id {int(alt[0])}): use that."
    elif len(text.strip()) and len(model.tokenizer(text.strip(), add_special_tokens=False)["input_ids"]) == 1:
        msg += f" Without the leading space, {text.strip()!r} is a single token."
    raise MechscopeError(msg)


def check_choice(name: str, value: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise MechscopeError(f"{name} {value!r} is not valid. Choose one of: {', '.join(choices)}.")
    return value


def check_site(model, site: str) -> str:
    check_choice("--site", site, SITES)
    if site == "resid_mid" and model.adapter.resid_mid is None:
        raise MechscopeError(
            f"--site resid_mid does not exist on {model.cfg.family} models (attention and MLP run in parallel). "
            "Use resid_pre, resid_post, attn_out, mlp_out or z.")
    if not model.adapter.causal:
        raise MechscopeError(
            f"Patching sweeps read the next-token prediction of a causal language model; {model.name} is a "
            f"{model.cfg.family} encoder. Use a causal LM (gpt2, llama, mistral, qwen2, phi3, gpt_neox).")
    return site


def parse_index_list(text: Optional[Union[str, Sequence[int]]], n: int, what: str) -> Optional[list[int]]:
    """'0-5,8,-1' (or a list of ints) -> sorted unique indices in [0, n); None stays None (all)."""
    if text is None or text == "" or text == "all":
        return None
    items: list[int] = []
    parts = text.split(",") if isinstance(text, str) else list(text)
    try:
        for part in parts:
            if isinstance(part, str) and "-" in part.strip()[1:]:
                a, b = part.strip()[0] + part.strip()[1:].split("-", 1)[0], part.strip()[1:].split("-", 1)[1]
                items += list(range(int(a), int(b) + 1))
            else:
                items.append(int(part))
    except ValueError:
        raise MechscopeError(f"--{what} {text!r} is not a list of indices. Write e.g. '0-5,8' or '-1'.") from None
    out = []
    for i in items:
        if not -n <= i < n:
            raise MechscopeError(f"--{what}: index {i} is out of range (0 to {n - 1}, or negative from the end).")
        out.append(i % n)
    return sorted(set(out))


def load_spec(path: Union[str, Path]) -> dict:
    """A YAML spec: optional defaults (site, metric, direction, method, layers, positions) and `pairs`, each with
    `clean`, `corrupt` and `tokens: [A, B]`."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise MechscopeError(f"--spec {str(path)!r}: no such file.")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as err:
        raise MechscopeError(f"--spec {str(path)!r} is not valid YAML: {err}") from None
    if isinstance(data, list):
        data = {"pairs": data}
    if not isinstance(data, dict) or not isinstance(data.get("pairs"), list) or not data["pairs"]:
        raise MechscopeError(
            f"--spec {str(path)!r} must hold a list `pairs:` of entries with clean, corrupt and tokens, e.g.\n"
            "pairs:\n  - clean: \"Michelle Jones was a top-notch student. Michelle\"\n"
            "    corrupt: \"Michelle Smith was a top-notch student. Michelle\"\n    tokens: [\" Smith\", \" Jones\"]")
    for i, pair in enumerate(data["pairs"]):
        if not isinstance(pair, dict) or not {"clean", "corrupt", "tokens"} <= set(pair):
            raise MechscopeError(f"--spec {str(path)!r}: pair {i} needs the keys clean, corrupt and tokens.")
        toks = pair["tokens"]
        if isinstance(toks, str):
            toks = [toks]
        if not isinstance(toks, list) or not 1 <= len(toks) <= 2:
            raise MechscopeError(f"--spec {str(path)!r}: pair {i} tokens must be a list [A, B] (or [A]).")
        pair["tokens"] = toks
    return data
