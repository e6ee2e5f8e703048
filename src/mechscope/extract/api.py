"""`mechscope.extract(...)`: checks, the output folder's life cycle (new / resume / finished), the manifest."""
from __future__ import annotations

import datetime as _dt
import shutil
import time
from pathlib import Path
from typing import Optional, Sequence, Union

from ..errors import MechscopeError
from . import storage
from .chunks import Settings
from .sources import open_source

MODES = ("document", "packed")
SHARD_BYTES = 256 << 20
DEFAULT_MAX_LENGTH = 256


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _version() -> str:
    from .. import __version__

    return __version__


def parse_sites(sites) -> list:
    if isinstance(sites, str):
        sites = [s for s in (p.strip() for p in sites.split(",")) if s]
    sites = list(sites or [])
    if not sites:
        raise MechscopeError("No sites given: pass --sites, e.g. --sites blocks.8.hook_mlp_out (comma-separated "
                             "for several).")
    return sites


def check_out(out: Path, resume: bool) -> Optional[dict]:
    """What the folder holds: None (new run), {'finished': manifest} or {'partial': run.json}."""
    import json

    if out.exists() and not out.is_dir():
        raise MechscopeError(f"--out {str(out)!r} is a file. Give a folder.")
    if not out.exists() or not any(out.iterdir()):
        return None
    if (out / storage.MANIFEST).exists():
        if not resume:
            raise MechscopeError(f"--out {str(out)!r} already holds a finished activation dataset. Nothing is "
                                 "overwritten: choose another --out, or delete that folder first.")
        return {"finished": json.loads((out / storage.MANIFEST).read_text())}
    if (out / storage.RUN).exists():
        n = len(storage.complete_shards(out))
        if not resume:
            raise MechscopeError(f"--out {str(out)!r} holds an unfinished extraction ({n} complete shard(s)). Rerun "
                                 "the same command with --resume to continue it, or choose another --out.")
        return {"partial": json.loads((out / storage.RUN).read_text())}
    raise MechscopeError(f"--out {str(out)!r} is not empty and is not a mechscope activation dataset. Choose a new "
                         "or empty folder.")


def _run_record(model, settings: Settings, source, engine: str, model_dtype: str) -> dict:
    return {"model": dict(model.source), "model_dtype": model_dtype, "settings": settings.key(),
            "input": source.describe(), "engine": engine, "started_at": _now()}


def _compare(old: dict, new: dict) -> None:
    diffs = [k for k in ("model", "model_dtype", "settings", "input")
             if old.get(k) != new.get(k)]
    if old.get("engine") != new.get("engine"):
        diffs.append("engine")
    if diffs:
        detail = "; ".join(f"{k}: before {old.get(k)!r}, now {new.get(k)!r}" for k in diffs)
        raise MechscopeError(f"--resume: this folder was started with different settings ({detail}). Rerun with "
                             "exactly the settings of the first run, or choose another --out.")


def _tokenizer_info(tok) -> dict:
    return {"class": type(tok).__name__, "name_or_path": getattr(tok, "name_or_path", None),
            "vocab_size": len(tok), "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id,
            "pad_token_id": tok.pad_token_id}


def _default_shard_tokens(dims_guess: int, store_dtype: str, max_length: int) -> int:
    width = {"float32": 4, "float16": 2, "bfloat16": 2}[store_dtype] * max(1, dims_guess)
    return max(max_length, SHARD_BYTES // width)


def extract(model=None, sites: Union[str, Sequence[str]] = (), input=None, out: Union[str, Path] = None, *,
            dataset: Optional[str] = None, config: Optional[str] = None, split: str = "train",
            text_field: str = "text", max_length: Optional[int] = None, mode: str = "document", dtype: str = "auto",
            device: str = "auto", store_dtype: Optional[str] = None, exclude_bos: bool = False,
            batch_tokens: Optional[int] = None, shard_tokens: Optional[int] = None, limit_docs: Optional[int] = None,
            resume: bool = False, push_to_hub: Optional[str] = None, private: bool = False, engine: str = "local",
            num_workers: Optional[int] = None, gpus_per_worker: Optional[float] = None,
            ray_address: Optional[str] = None, arrays: bool = True, progress: bool = True) -> dict:
    """Extract activations at `sites` for every document of `input` into the folder `out`; returns a summary.

    model: a `mechscope.Model`, or what `mechscope.load` takes (None = the embedded SmolLM2-135M-Instruct).
    input: a .txt/.jsonl/.parquet/.csv file, a folder of them, or a list of strings; or `dataset=` a Hub dataset.
    max_length: tokens per context (default 256, or the model's context if shorter).
    mode: "document" (each document truncated at max_length) or "packed" (documents + EOS in full contexts).
    store_dtype: fp32 / fp16 / bf16 (default: the model's dtype; bf16 is stored as its uint16 bits).
    Read the result with `mechscope.ActivationDataset(out)` or `datasets.load_dataset(out)`.
    """
    t0 = time.perf_counter()
    sites = parse_sites(sites)
    if out is None:
        raise MechscopeError("No output folder: pass --out DIR.")
    out = Path(out).expanduser()
    if mode not in MODES:
        raise MechscopeError(f"--mode {mode!r} is not valid. Use 'document' or 'packed'.")
    if max_length is not None and (not isinstance(max_length, int) or max_length < 1):
        raise MechscopeError(f"--max-length {max_length!r} must be a positive number of tokens.")
    for name, v in (("--batch-tokens", batch_tokens), ("--shard-tokens", shard_tokens), ("--limit-docs", limit_docs)):
        if v is not None and v < 1:
            raise MechscopeError(f"{name} {v} must be at least 1.")
    if engine not in ("local", "ray"):
        raise MechscopeError(f"--engine {engine!r} is not valid. Use 'local' or 'ray'.")
    if store_dtype is not None and store_dtype not in storage.DTYPE_ALIASES:
        raise MechscopeError(f"--store-dtype {store_dtype!r} is not valid. Use fp32, fp16 or bf16.")
    state = check_out(out, resume)
    source = open_source(input, dataset=dataset, config=config, split=split, text_field=text_field)
    hub = None
    if push_to_hub:
        from .hub import HubTarget

        hub = HubTarget(push_to_hub, private=private)
        hub.check()  # before any extraction work
    if state and "finished" in state:
        manifest = state["finished"]
        summary = summary_from(manifest, out, time.perf_counter() - t0, resumed_finished=True)
        if sorted(sites) != sorted(manifest["sites"]):
            summary["warnings"].append(f"--resume: {str(out)!r} was already finished with sites "
                                       f"{', '.join(manifest['sites'])}; nothing was extracted for {', '.join(sites)}.")
        if hub:
            summary["hub_url"] = hub.push(out, manifest)
        return summary

    from ..model import Model

    if isinstance(model, Model):
        m = model
    else:
        from ..cli.common import load_model

        m = load_model("default" if model is None else str(model), dtype, device)
    model_dtype = str(m.dtype).replace("torch.", "")
    store = storage.DTYPE_ALIASES[store_dtype] if store_dtype else model_dtype
    for s in sites:
        m.site(s)  # unknown names fail here, before any folder is touched
    sites = [m.site(s).name for s in sites]
    if max_length is None:
        max_length = min(DEFAULT_MAX_LENGTH, m.cfg.n_ctx or DEFAULT_MAX_LENGTH)
    if m.cfg.n_ctx and max_length > m.cfg.n_ctx:
        raise MechscopeError(f"--max-length {max_length} exceeds the model's context ({m.cfg.n_ctx} tokens).")
    if batch_tokens is None:  # measured on 2 CPU cores: packed rows of 1k tokens beat 8k (cache), padded batches not
        from .pipeline import packs_by_default

        if packs_by_default(m, max_length):
            batch_tokens = 1024
        else:
            batch_tokens = 32768 if m.device.type == "cuda" else 8192
    batch_tokens = max(batch_tokens, max_length)
    if shard_tokens is None:
        shard_tokens = _default_shard_tokens(m.cfg.d_model * len(sites), store, max_length)
    settings = Settings(sites=sites, max_length=max_length, mode=mode, exclude_bos=exclude_bos,
                        batch_tokens=batch_tokens, shard_tokens=shard_tokens, store_dtype=store,
                        limit_docs=limit_docs)
    record = _run_record(m, settings, source, engine, model_dtype)
    created = not out.exists()
    if state and "partial" in state:
        _compare(state["partial"], record)
        record = state["partial"]
        storage.clean_temporaries(out)
    else:
        out.mkdir(parents=True, exist_ok=True)
        storage.write_json(out / storage.RUN, record)
    try:
        if engine == "ray":
            from .ray_engine import run_ray

            result = run_ray(m, source, out, settings, num_workers=num_workers, gpus_per_worker=gpus_per_worker,
                             ray_address=ray_address, progress=progress)
        else:
            result = _run_local_resumable(m, source, out, settings, progress)
    except MechscopeError:
        raise
    except KeyboardInterrupt:
        raise MechscopeError(f"Interrupted. Complete shards are kept in {str(out)!r}: rerun the same command "
                             "with --resume to continue.") from None
    except MemoryError:
        raise MechscopeError(f"Out of host memory. Complete shards are kept in {str(out)!r}; lower --shard-tokens "
                             "or --batch-tokens and rerun with --resume in a new --out (settings must match to "
                             "resume).") from None
    except RuntimeError as err:
        if "out of memory" not in str(err).lower():
            raise
        raise MechscopeError(f"The device ran out of memory ({str(err).splitlines()[0]}). Complete shards are kept "
                             f"in {str(out)!r}; lower --batch-tokens (now {batch_tokens}) and start again in a new "
                             "--out (settings must match to resume).") from None
    final = result["state"]
    shards = storage.complete_shards(out)
    if final["tokens"] == 0 or not shards:
        reasons = ", ".join(f"{v} {k}" for k, v in sorted(final["skipped"].items())) or "no records at all"
        if created:
            shutil.rmtree(out, ignore_errors=True)
        else:  # the folder existed (empty): leave it empty again
            for sub in (storage.RUN, storage.DATA, storage.DOCS):
                p = out / sub
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        raise MechscopeError(f"The corpus gave no tokens to extract ({final['records']} record(s) read; skipped: "
                             f"{reasons}). No dataset was written. Check --input and --text-field.")
    manifest = finalize(out, m, settings, record, final, result["dims"], shards, arrays, engine)
    summary = summary_from(manifest, out, time.perf_counter() - t0)
    if hub:
        summary["hub_url"] = hub.push(out, manifest)
    return summary


def _run_local_resumable(m, source, out: Path, settings: Settings, progress: bool) -> dict:
    from .pipeline import run_local

    done = storage.complete_shards(out)
    if done != list(range(len(done))):
        raise MechscopeError(f"{str(out)!r}: shards {done} are not contiguous; this folder was not written by the "
                             "local engine. Resume it with the engine that started it.")
    start_state = storage.read_state(out / storage.DATA / storage.shard_name(done[-1])) if done else None
    return run_local(m, source, out, settings, start_state, len(done), progress)


def finalize(out: Path, m, settings: Settings, record: dict, final: dict, dims: dict, shards: list,
             arrays: bool, engine: str) -> dict:
    """Consolidated arrays, dataset card, then the manifest (last)."""
    from .dataset import shard_rows

    rows = shard_rows(out, shards)
    if arrays:
        storage.consolidate(out, shards, settings.sites, settings.store_dtype, dims)
    tok = m.tokenizer
    manifest = {
        "format": "mechscope-activations", "format_version": 1,
        "model": {**dict(m.source), "name": m.name, "family": m.cfg.family, "dtype": record["model_dtype"]},
        "sites": list(settings.sites), "d": {s: int(dims[s]) for s in settings.sites},
        "dtype": settings.store_dtype,
        "storage": {"bfloat16_as": "uint16 bits" if settings.store_dtype == "bfloat16" else None,
                    "shards": f"{storage.DATA}/shard-NNNNN.arrow (Arrow IPC file)",
                    "documents": f"{storage.DOCS}/shard-NNNNN.arrow", "arrays": storage.ARRAYS if arrays else None},
        "counts": {"documents": final["documents"], "records": final["records"], "tokens": int(sum(rows)),
                   "shards": len(shards), "truncated": final["truncated"], "skipped": dict(final["skipped"]),
                   "nonfinite": {s: int(final.get("nonfinite", {}).get(s, 0)) for s in settings.sites}},
        "shards": [{"file": f"{storage.DATA}/{storage.shard_name(i)}", "rows": int(r)} for i, r in zip(shards, rows)],
        "tokenizer": _tokenizer_info(tok), "max_length": settings.max_length, "mode": settings.mode,
        "exclude_bos": settings.exclude_bos, "bos_token_id": tok.bos_token_id,
        "settings": settings.key(), "input": record["input"], "engine": engine,
        "mechscope_version": _version(), "started_at": record["started_at"], "finished_at": _now(),
        "fingerprint": storage.fingerprint(out, shards),
    }
    (out / "README.md").write_text(storage.dataset_card(manifest))
    storage.write_json(out / storage.MANIFEST, manifest)
    return manifest


def folder_bytes(out: Path) -> int:
    return sum(p.stat().st_size for p in Path(out).rglob("*") if p.is_file())


def summary_from(manifest: dict, out: Path, seconds: float, resumed_finished: bool = False) -> dict:
    c = manifest["counts"]
    warnings = []
    bad = {s: n for s, n in c.get("nonfinite", {}).items() if n}
    if bad:
        warnings.append(f"non-finite (inf/nan) activation values: {', '.join(f'{s}: {n:,}' for s, n in bad.items())}"
                        f" (model dtype {manifest['model'].get('dtype')}). Use --dtype bf16 (or fp32) instead of "
                        "fp16: the residual stream overflows fp16's range.")
    if c.get("truncated"):
        warnings.append(f"{c['truncated']:,} document(s) were longer than --max-length {manifest['max_length']} and "
                        "were truncated (use --mode packed to keep every token).")
    return {"out": str(out), "tokens": c["tokens"], "documents": c["documents"], "records": c["records"],
            "shards": c["shards"], "bytes": folder_bytes(out), "seconds": round(seconds, 3),
            "tokens_per_s": round(c["tokens"] / seconds, 1) if seconds > 0 and not resumed_finished else None,
            "skipped": c["skipped"], "truncated": c["truncated"], "nonfinite": c.get("nonfinite", {}),
            "sites": manifest["sites"], "dtype": manifest["dtype"], "already_finished": resumed_finished,
            "warnings": warnings}

