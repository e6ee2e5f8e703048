"""Extraction in two steps: `plan(config)` (every check, the output folder's state: no model loaded) and
`run(plan, model)` (resolve the settings against the model, extract, write the manifest). `mechscope.extract(...)`
is both in one call.

The output folder's life cycle: new -> run.json (the settings, written first) -> data/ shards -> arrays/ ->
README.md -> manifest.json (written last: a folder without it is not a finished dataset). `resume=True` continues
after the last complete shard, or returns a finished dataset as it is; either way only with the settings it was made
with (every key compared; a refusal names the key).
"""
from __future__ import annotations

import datetime as _dt
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from ..errors import ConfigError, DataError, ResourceError
from . import storage
from .config import DEFAULT_MAX_LENGTH, ExtractConfig, Settings, describe_differences, differences, parse_sites
from .sources import open_source

SHARD_BYTES = 256 << 20
MODES = ("document", "packed")  # kept for callers of the old module layout
__all__ = ["Plan", "plan", "run", "extract", "resolve", "parse_sites", "DEFAULT_MAX_LENGTH"]


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def folder_state(out: Path, resume: bool) -> tuple:
    """('new', None), ('finished', manifest) or ('partial', run record) of the output folder."""
    import json

    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {str(out)!r} is a file. Give a folder.", "out")
    if not out.exists() or not any(out.iterdir()):
        return "new", None
    if (out / storage.MANIFEST).exists():
        if not resume:
            raise ConfigError(f"--out {str(out)!r} already holds a finished activation dataset. Nothing is "
                              "overwritten: choose another --out, or delete that folder first.", "out")
        return "finished", json.loads((out / storage.MANIFEST).read_text())
    if (out / storage.RUN).exists():
        n = len(storage.complete_shards(out))
        if not resume:
            raise ConfigError(f"--out {str(out)!r} holds an unfinished extraction ({n} complete shard(s)). Rerun "
                              "the same command with --resume to continue it, or choose another --out.", "out")
        return "partial", json.loads((out / storage.RUN).read_text())
    raise ConfigError(f"--out {str(out)!r} is not empty and is not a mechscope activation dataset. Choose a new "
                      "or empty folder.", "out")


def _resolved_of(record: dict) -> dict:
    """What a recorded run (run.json or manifest.json) resolved each request key to."""
    model = record.get("model") or {}
    got = dict(record.get("settings") or {})
    got.update(model=model.get("model"), input=record.get("input"), engine=record.get("engine"),
               dtype=record.get("model_dtype") or model.get("dtype"))
    if "storage" in record:  # a manifest
        got["arrays"] = record["storage"].get("arrays") is not None
    return got


def refuse_changes(record: dict, request: dict, out: Path) -> None:
    diffs = differences(record.get("request") or {}, _resolved_of(record), request)
    if diffs:
        raise ConfigError(f"--resume: {str(out)!r} was made with other settings ({describe_differences(diffs)}). "
                          "Rerun with exactly the settings of the first run, or choose another --out.", diffs[0][0])


@dataclass
class Plan:
    """What `run` will do: the checked config, the input, the folder's state and the Hub target."""
    config: ExtractConfig
    source: object
    state: str                      # new | partial | finished
    record: Optional[dict] = None   # run.json (partial) or manifest.json (finished)
    hub: object = None
    t0: float = field(default_factory=time.perf_counter)

    @property
    def needs_model(self) -> bool:
        return self.state != "finished"


def plan(config: ExtractConfig) -> Plan:
    """Every check that needs no model: the settings, the output folder, the input, the Hub; resume settings."""
    t0 = time.perf_counter()
    config.check()
    state, record = folder_state(config.out, config.resume)
    c = config
    source = open_source(c.input, dataset=c.dataset, config=c.dataset_config, split=c.split, text_field=c.text_field)
    hub = None
    if c.push_to_hub:
        from .hub import HubTarget

        hub = HubTarget(c.push_to_hub, private=c.private)
        hub.check()  # before any extraction work
    if record is not None:
        refuse_changes(record, config.request(source), config.out)
    return Plan(config, source, state, record, hub, t0)


def resolve(config: ExtractConfig, m) -> Settings:
    """The settings against the model: site names, widths, max length, store dtype, packing and batch size."""
    from ..devices import dtype_name
    from .pipeline import decide_packing, probe_dims, storable_sites

    sites = storable_sites(m, config.sites)  # unknown names fail here, before any folder is touched
    max_length = config.max_length or min(DEFAULT_MAX_LENGTH, m.cfg.n_ctx or DEFAULT_MAX_LENGTH)
    if m.cfg.n_ctx and max_length > m.cfg.n_ctx:
        raise ConfigError(f"max_length={max_length} exceeds the model's context ({m.cfg.n_ctx} tokens).",
                          "max_length")
    store = config.store_dtype or dtype_name(m.dtype)
    dims = probe_dims(m, sites)
    pack = decide_packing(m, sites, max_length)
    batch_tokens = config.batch_tokens
    if batch_tokens is None:  # measured on 2 CPU cores: packed rows of 1k tokens beat 8k (cache), padded batches not
        batch_tokens = 1024 if pack else 32768 if m.device.type == "cuda" else 8192
    shard_tokens = config.shard_tokens
    if shard_tokens is None:
        width = np.dtype(storage.STORE_DTYPES[store]).itemsize * max(1, sum(dims.values()))
        shard_tokens = max(max_length, SHARD_BYTES // width)
    return Settings(sites=[s.name for s in sites], max_length=max_length, mode=config.mode,
                    exclude_bos=config.exclude_bos, batch_tokens=max(batch_tokens, max_length),
                    shard_tokens=shard_tokens, store_dtype=store, limit_docs=config.limit_docs, pack=pack, dims=dims)


def _model(config: ExtractConfig, model):
    from ..model import Model

    if isinstance(model, Model):
        return model
    from ..loading import load

    return load(config.model if model is None else str(model), dtype=config.dtype, device=config.device)


def _record(m, settings: Settings, request: dict, source, engine: str) -> dict:
    from ..devices import dtype_name

    return {"model": dict(m.source), "model_dtype": dtype_name(m.dtype), "settings": settings.key(),
            "request": request, "input": source.describe(), "engine": engine, "started_at": _now()}


def run(p: Plan, model=None) -> dict:
    """Extract what the plan says (loading the model when `model` is None or a name); returns the summary."""
    c, out = p.config, p.config.out
    if p.state == "finished":
        summary = summary_from(p.record, out, time.perf_counter() - p.t0, resumed_finished=True)
        if p.hub:
            summary["hub_url"] = p.hub.push(out, p.record)
        return summary
    m = _model(c, model)
    c = replace(c, model=m.source.get("model") or m.name)  # the name it is recorded under
    from ..devices import dtype_name

    c.dtype = dtype_name(m.dtype)
    settings = resolve(c, m)
    request = c.request(p.source)
    record = _record(m, settings, request, p.source, c.engine)
    created = not out.exists()
    if p.state == "partial":
        refuse_changes(p.record, request, out)
        _same_resolution(p.record, record, out)
        record = p.record
        storage.clean_temporaries(out)
    else:
        out.mkdir(parents=True, exist_ok=True)
        storage.write_json(out / storage.RUN, record)
    result = _execute(m, p.source, out, settings, c)
    final, shards = result["state"], storage.complete_shards(out)
    if final["tokens"] == 0 or not shards:
        _remove_empty(out, created)
        reasons = ", ".join(f"{v} {k}" for k, v in sorted(final["skipped"].items())) or "no records at all"
        raise DataError(f"The corpus gave no tokens to extract ({final['records']} record(s) read; skipped: "
                        f"{reasons}). No dataset was written. Check --input and --text-field.", "input")
    manifest = finalize(out, m, settings, record, final, result["dims"], shards, c.arrays, c.engine)
    summary = summary_from(manifest, out, time.perf_counter() - p.t0)
    if p.hub:
        summary["hub_url"] = p.hub.push(out, manifest)
    return summary


def _same_resolution(old: dict, new: dict, out: Path) -> None:
    """A partial run continues only with the same model, dtype and resolved settings (and with the model loaded,
    these are known exactly)."""
    keys = ("sites", "max_length", "mode", "exclude_bos", "batch_tokens", "shard_tokens", "store_dtype", "limit_docs")
    diffs = [(k, old["settings"].get(k), new["settings"].get(k)) for k in keys
             if k in old.get("settings", {}) and old["settings"].get(k) != new["settings"].get(k)]
    diffs += [(k, old.get(k), new.get(k)) for k in ("model", "model_dtype", "input", "engine") if old.get(k) != new.get(k)]
    if diffs:
        raise ConfigError(f"--resume: {str(out)!r} was started with other settings ({describe_differences(diffs)}). "
                          "Rerun with exactly the settings of the first run, or choose another --out.", diffs[0][0])


def _execute(m, source, out: Path, settings: Settings, c: ExtractConfig) -> dict:
    """Run the pipeline on --engine local or ray. A Ctrl-C stays a KeyboardInterrupt: complete shards are kept and `resume=True` continues."""
    try:
        if c.engine == "ray":
            from .ray_engine import run_ray

            return run_ray(m, source, out, settings, num_workers=c.num_workers, gpus_per_worker=c.gpus_per_worker,
                           ray_address=c.ray_address, progress=c.progress)
        return _run_local_resumable(m, source, out, settings, c.progress)
    except MemoryError:
        raise ResourceError(f"Out of host memory. Complete shards are kept in {str(out)!r}; lower --shard-tokens "
                            "or --batch-tokens and rerun with --resume in a new --out (settings must match to "
                            "resume).") from None
    except RuntimeError as err:
        if "out of memory" not in str(err).lower():
            raise
        raise ResourceError(f"The device ran out of memory ({str(err).splitlines()[0]}). Complete shards are kept "
                            f"in {str(out)!r}; lower --batch-tokens (now {settings.batch_tokens}) and start again in "
                            "a new --out (settings must match to resume).", "batch_tokens") from None


def _remove_empty(out: Path, created: bool) -> None:
    if created:
        shutil.rmtree(out, ignore_errors=True)
        return
    for sub in (storage.RUN, storage.DATA, storage.DOCS):  # the folder existed (empty): leave it empty again
        p = out / sub
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)


def extract(model=None, sites: Union[str, Sequence[str]] = (), input=None, out: Union[str, Path] = None, *,
            config: Optional[str] = None, **settings) -> dict:
    """Extract activations at `sites` for every document of `input` into the folder `out`; returns a summary.

    model: a `mechscope.Model`, or what `mechscope.load` takes (None = the embedded SmolLM2-135M-Instruct).
    input: a .txt/.jsonl/.parquet/.csv file, a folder of them, or a list of strings; or `dataset=` a Hub dataset
    (`config=` its configuration, `split=`, `text_field=`).
    The other keywords are the fields of `ExtractConfig`: max_length (default 256, or the model's context if
    shorter), mode ("document": each document truncated at max_length; "packed": documents + EOS in full contexts),
    store_dtype (fp32 / fp16 / bf16; default the model's dtype; bf16 is stored as its uint16 bits), dtype, device,
    exclude_bos, batch_tokens, shard_tokens, limit_docs, arrays, engine ("local" | "ray"), num_workers,
    gpus_per_worker, ray_address, resume, push_to_hub, private, progress.
    Read the result with `mechscope.ActivationDataset(out)` or `datasets.load_dataset(out)`. docs/extraction.md.
    """
    from ..model import Model

    name = None if model is None or isinstance(model, Model) else str(model)
    cfg = ExtractConfig(sites=sites, out=out, input=input, model=name, dataset_config=config, **settings)
    if isinstance(model, Model):
        from ..devices import dtype_name

        cfg.model, cfg.dtype = model.source.get("model") or model.name, dtype_name(model.dtype)
        cfg.device = str(model.device)
    return run(plan(cfg), model if isinstance(model, Model) else None)


def _run_local_resumable(m, source, out: Path, settings: Settings, progress: bool) -> dict:
    from .pipeline import run_local

    done = storage.complete_shards(out)
    if done != list(range(len(done))):
        raise DataError(f"{str(out)!r}: shards {done} are not contiguous; this folder was not written by the "
                        "local pipeline (--engine local). Resume it with the --engine that started it.", "out")
    start_state = storage.read_state(out / storage.DATA / storage.shard_name(done[-1])) if done else None
    return run_local(m, source, out, settings, start_state, len(done), progress)


def _tokenizer_info(tok) -> dict:
    return {"class": type(tok).__name__, "name_or_path": getattr(tok, "name_or_path", None),
            "vocab_size": len(tok), "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id,
            "pad_token_id": tok.pad_token_id}


def finalize(out: Path, m, settings: Settings, record: dict, final: dict, dims: dict, shards: list,
             arrays: bool, engine: str) -> dict:
    """Consolidated arrays, dataset card, then the manifest (last)."""
    from ..version import __version__
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
        "settings": settings.key(), "request": record.get("request"), "input": record["input"], "engine": engine,
        "mechscope_version": __version__, "started_at": record["started_at"], "finished_at": _now(),
        "fingerprint": storage.fingerprint(out, shards),
    }
    storage.write_text(out / "README.md", storage.dataset_card(manifest))
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
