"""On-disk layout of an activation dataset, and the writes that keep it whole.

    DIR/run.json                     the settings of the run (written first; `--resume` checks them)
    DIR/data/shard-00000.arrow       Arrow IPC file, one record batch: token_id, doc_id, position and one
                                     fixed-size-list column per site (float32 / float16, or bf16 bits as uint16)
    DIR/documents/shard-00000.arrow  doc_id, text of the documents first seen in that shard
    DIR/arrays/<site>.npy            the same activations as one (tokens, d) array per site, memory-mappable
    DIR/arrays/{token_id,doc_id,position}.npy
    DIR/README.md                    dataset card; its YAML makes `datasets.load_dataset(DIR)` read data/*.arrow
    DIR/manifest.json                written last: a folder without it is not a finished dataset

Every file is written under a temporary name in its final folder, flushed, fsynced and renamed, so a file that is
visible is complete. The resume state after a shard (next document, counters) lives in that shard's schema metadata,
so a shard and the state after it appear in one atomic rename.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from .. import fsio
from ..jsonsafe import json_safe

DATA, DOCS, ARRAYS = "data", "documents", "arrays"
MANIFEST, RUN = "manifest.json", "run.json"
META_KEY = b"mechscope"
STORE_DTYPES = {"float32": np.float32, "float16": np.float16, "bfloat16": np.uint16}
META_COLUMNS = (("token_id", np.int32), ("doc_id", np.int64), ("position", np.int32))


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.arrow"


def shard_index(name: str) -> int:
    return int(name[len("shard-"):-len(".arrow")])


RESUME_HINT = "Every complete shard stays; fix the cause and rerun the same command with --resume."


def atomic_write(path: Path, write: Callable[[object], None], binary: bool = True) -> None:
    """`fsio.atomic_write` with the extraction's advice (complete shards stay, --resume continues)."""
    fsio.atomic_write(path, write, binary=binary, hint=RESUME_HINT)


def write_json(path: Path, obj: dict) -> None:
    """Strict JSON (no NaN) with sorted keys, atomically."""
    text = json.dumps(json_safe(obj), indent=2, sort_keys=True, allow_nan=False) + "\n"
    atomic_write(path, lambda fh: fh.write(text), binary=False)


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda fh: fh.write(text), binary=False)


def _arrow_type(store_dtype: str):
    import pyarrow as pa

    return {"float32": pa.float32(), "float16": pa.float16(), "bfloat16": pa.uint16()}[store_dtype]


def shard_table(token_ids, doc_ids, positions, acts: dict, store_dtype: str, state: dict):
    """An Arrow table for one shard; `acts[site]` is (n, d) in the storage numpy dtype."""
    import pyarrow as pa

    cols = [pa.array(np.asarray(token_ids, np.int32)), pa.array(np.asarray(doc_ids, np.int64)),
            pa.array(np.asarray(positions, np.int32))]
    names = [c for c, _ in META_COLUMNS]
    for site, a in acts.items():
        a = np.ascontiguousarray(a)
        flat = pa.array(a.reshape(-1), type=_arrow_type(store_dtype))
        cols.append(pa.FixedSizeListArray.from_arrays(flat, a.shape[1]))
        names.append(site)
    meta = {META_KEY: json.dumps(state, sort_keys=True).encode()}
    return pa.Table.from_arrays(cols, names=names).replace_schema_metadata(meta)


def write_arrow(path: Path, table) -> None:
    import pyarrow as pa

    def write(fh):
        sink = pa.PythonFile(fh, mode="w")
        with pa.ipc.new_file(sink, table.schema) as w:
            w.write_table(table, max_chunksize=max(1, table.num_rows))

    atomic_write(path, write)


def docs_table(doc_ids, texts):
    import pyarrow as pa

    return pa.Table.from_arrays([pa.array(np.asarray(doc_ids, np.int64)), pa.array(list(texts), pa.large_string())],
                                names=["doc_id", "text"])


def read_state(path: Path) -> dict:
    import pyarrow as pa

    with pa.memory_map(str(path)) as src:
        meta = pa.ipc.open_file(src).schema.metadata or {}
    return json.loads(meta.get(META_KEY, b"{}"))


def complete_shards(out: Path) -> list[int]:
    d = Path(out) / DATA
    if not d.is_dir():
        return []
    return sorted(shard_index(p.name) for p in d.glob("shard-*.arrow"))


def clean_temporaries(out: Path) -> int:
    """Remove temporary files left by a killed run (never a complete file)."""
    n = 0
    for sub in (DATA, DOCS, ARRAYS, "."):
        d = Path(out) / sub
        if d.is_dir():
            for p in d.glob(".*.tmp"):
                p.unlink(missing_ok=True)
                n += 1
    return n


def open_shard(path: Path):
    """(record batch, memory map) of a shard, zero-copy."""
    import pyarrow as pa

    src = pa.memory_map(str(path))
    reader = pa.ipc.open_file(src)
    if reader.num_record_batches == 1:
        return reader.get_batch(0), src
    return pa.Table.from_batches([reader.get_batch(i) for i in range(reader.num_record_batches)]) \
        .combine_chunks().to_batches()[0], src


def column_values(batch, name: str) -> np.ndarray:
    """A column as numpy without copying: (n,) for scalars, (n, d) for a fixed-size-list site column."""
    import pyarrow as pa

    col = batch.column(batch.schema.get_field_index(name))
    if pa.types.is_fixed_size_list(col.type):
        d = col.type.list_size
        vals = col.flatten()  # honours the array offset; zero-copy slice of the child
        return vals.to_numpy(zero_copy_only=True).reshape(-1, d)
    return col.to_numpy(zero_copy_only=True)


def consolidate(out: Path, shards: list[int], sites: list[str], store_dtype: str, dims: dict) -> None:
    """arrays/<site>.npy (tokens, d) and the row columns, concatenated over the shards in order."""
    out = Path(out)
    metas = []
    total = 0
    for i in shards:
        batch, _ = open_shard(out / DATA / shard_name(i))
        metas.append(batch.num_rows)
        total += batch.num_rows
    targets = [(site, (total, dims[site]), STORE_DTYPES[store_dtype]) for site in sites]
    targets += [(c, (total,), dt) for c, dt in META_COLUMNS]
    for name, shape, dt in targets:
        path = out / ARRAYS / f"{name}.npy"

        def write(fh, name=name, shape=shape, dt=dt):
            np.lib.format.write_array_header_1_0(fh, {"descr": np.lib.format.dtype_to_descr(np.dtype(dt)),
                                                      "fortran_order": False, "shape": shape})
            for i in shards:
                batch, src = open_shard(out / DATA / shard_name(i))
                fh.write(np.ascontiguousarray(column_values(batch, name), dtype=dt).tobytes())
                del batch
                src.close()

        atomic_write(path, write)


def fingerprint(out: Path, shards: list) -> str:
    """BLAKE2b of every data and document shard's bytes, in order: equal for byte-identical datasets only."""
    import hashlib

    h = hashlib.blake2b(digest_size=16)
    for sub in (DATA, DOCS):
        for i in shards:
            path = Path(out) / sub / shard_name(i)
            if path.exists():
                h.update(f"{sub}/{path.name}:{path.stat().st_size}".encode())
                with open(path, "rb") as fh:
                    for block in iter(lambda: fh.read(1 << 23), b""):
                        h.update(block)
    return h.hexdigest()


def dataset_card(manifest: dict, repo: Optional[str] = None) -> str:
    """README.md: YAML that points `datasets` at the shards, then what the dataset is and how to read it.

    Each config's `description` carries the dataset's fingerprint: `datasets` caches a local folder under a hash of
    its card's configs (not of the files), so without it a second extraction into a folder of the same name would
    be served from the first one's cache."""
    sites = manifest["sites"]
    desc = "  description: " + json.dumps(f"mechscope activations {manifest.get('fingerprint', '')}".strip())
    name = repo or "DIR"
    load = f'load_dataset("{repo}")' if repo else 'load_dataset("DIR")'
    lines = [
        "---",
        "configs:",
        "- config_name: default",
        desc,
        "  data_files:",
        "  - split: train",
        f"    path: {DATA}/*.arrow",
        "- config_name: documents",
        desc,
        "  data_files:",
        "  - split: train",
        f"    path: {DOCS}/*.arrow",
        "tags:",
        "- mechscope",
        "- activations",
        "- interpretability",
        "---",
        "",
        f"# Activations of {manifest['model']['model']} at {', '.join(sites)}",
        "",
        f"Extracted with [mechscope](https://pypi.org/project/mechscope/) {manifest['mechscope_version']}: "
        f"{manifest['counts']['tokens']:,} tokens from {manifest['counts']['documents']:,} documents, "
        f"{manifest['counts']['shards']} shards, mode `{manifest['mode']}`, max_length {manifest['max_length']}, "
        f"BOS {'excluded' if manifest['exclude_bos'] else 'kept'}.",
        "",
        "| site | d | stored dtype |",
        "|---|---|---|",
        *[f"| `{s}` | {manifest['d'][s]} | {manifest['dtype']} |" for s in sites],
        "",
        "Each row is one real token (never a pad): `token_id`, `doc_id` (index of the document in the input), "
        "`position` (in the model's context) and one vector per site.",
        "",
        "```python",
        "from datasets import load_dataset",
        f"rows = {load}                       # the activation rows",
        f"docs = {load[:-1]}, \"documents\")  # doc_id -> text",
        "",
        "import mechscope                        # or, after downloading the folder (huggingface_hub.snapshot_download):",
        f"ds = mechscope.ActivationDataset(\"{name}\")",
        f"x = ds.read(\"{sites[0]}\", range(8))     # float32 (8, d)",
        "```",
        "",
        "bf16 activations are stored losslessly as their uint16 bit patterns (numpy has no bfloat16): "
        "`torch.from_numpy(bits.astype('int16')).view(torch.bfloat16)`; `ActivationDataset.read` does it for you.",
        "",
        "```json",
        json.dumps({k: manifest[k] for k in ("model", "sites", "d", "dtype", "counts", "mode", "max_length")},
                   indent=2),
        "```",
        "",
    ]
    return "\n".join(lines)
