"""The one configuration of an extraction: `ExtractConfig` (what the user asked for) and `Settings` (the same,
resolved against the model: every default filled in, the packing decided, the site widths measured).

`ExtractConfig` is what `mechscope extract` maps its flags onto and what `mechscope.extract(...)` builds from its
keywords; `check()` holds every check that needs no model. `request()` is the part that defines the dataset: it is
recorded in run.json and manifest.json, and `--resume` compares it key by key (`differences`), finished or not.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from ..devices import DTYPE_ALIASES
from ..errors import ConfigError

MODES = ("document", "packed")
ENGINES = ("local", "ray")
DEFAULT_MAX_LENGTH = 256
# How a run goes, not what it writes: never compared on --resume (a finished dataset can be pushed later, a run can
# move to another machine or cluster).
RUN_ONLY = ("out", "device", "resume", "push_to_hub", "private", "progress", "num_workers", "gpus_per_worker",
            "ray_address")
# The input: recorded and compared as one key, "input" (what the source describes: path, files, dataset, split...).
SOURCE_KEYS = ("input", "dataset", "dataset_config", "split", "text_field")


def parse_sites(sites) -> list:
    if isinstance(sites, str):
        sites = [s for s in (p.strip() for p in sites.split(",")) if s]
    sites = list(sites or [])
    if not sites:
        raise ConfigError("No sites given: pass --sites, e.g. --sites blocks.8.hook_mlp_out (comma-separated "
                          "for several).", "sites")
    return sites


@dataclass
class ExtractConfig:
    """Every setting of one extraction (see `mechscope.extract` for what each means)."""
    sites: Union[str, Sequence[str]] = ()
    out: Union[str, Path, None] = None
    input: Any = None                        # a path, a list of strings, or a Source
    dataset: Optional[str] = None            # a Hub dataset instead of `input`
    dataset_config: Optional[str] = None
    split: str = "train"
    text_field: str = "text"
    model: Optional[str] = None              # what `mechscope.load` takes (None: the embedded default model)
    dtype: str = "auto"
    device: str = "auto"
    max_length: Optional[int] = None         # None: 256, or the model's context if shorter
    mode: str = "document"
    store_dtype: Optional[str] = None        # None: the model's dtype
    exclude_bos: bool = False
    batch_tokens: Optional[int] = None       # None: by device and packing (Settings)
    shard_tokens: Optional[int] = None       # None: about 256 MB per shard
    limit_docs: Optional[int] = None
    arrays: bool = True
    engine: str = "local"
    num_workers: Optional[int] = None
    gpus_per_worker: Optional[float] = None
    ray_address: Optional[str] = None
    resume: bool = False
    push_to_hub: Optional[str] = None
    private: bool = False
    progress: bool = True

    def __post_init__(self):
        self.sites = parse_sites(self.sites)
        if self.out is None:
            raise ConfigError("No output folder: pass out=DIR (--out DIR).", "out")
        self.out = Path(self.out).expanduser()
        if self.store_dtype is not None and self.store_dtype in DTYPE_ALIASES:
            self.store_dtype = DTYPE_ALIASES[self.store_dtype]

    def check(self) -> None:
        """Every check that needs no model and no data (so that they all come before the model load)."""
        from ..devices import resolve_device, resolve_dtype

        if self.mode not in MODES:
            raise ConfigError(f"mode={self.mode!r} is not valid. Use 'document' or 'packed'.", "mode")
        if self.engine not in ENGINES:
            raise ConfigError(f"engine={self.engine!r} is not valid. Use 'local' or 'ray'.", "engine")
        if self.store_dtype is not None and self.store_dtype not in DTYPE_ALIASES:
            raise ConfigError(f"store_dtype={self.store_dtype!r} is not valid. Use fp32, fp16 or bf16.",
                              "store_dtype")
        for name in ("max_length", "batch_tokens", "shard_tokens", "limit_docs", "num_workers"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ConfigError(f"{name}={v!r} must be a positive whole number.", name)
        if self.gpus_per_worker is not None and self.gpus_per_worker < 0:
            raise ConfigError(f"gpus_per_worker={self.gpus_per_worker!r} must be >= 0.", "gpus_per_worker")
        resolve_dtype(self.dtype, resolve_device(self.device))
        if self.out.exists() and not self.out.is_dir():
            raise ConfigError(f"out={str(self.out)!r} is a file. Give a folder.", "out")

    def model_name(self) -> str:
        from ..loading import DEFAULT_NAME

        return DEFAULT_NAME if self.model in (None, "default") else str(self.model)

    def request(self, source) -> dict:
        """The settings that define the dataset, as asked (None = the default): recorded and compared on resume."""
        from ..devices import dtype_name, resolve_device, resolve_dtype

        req = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in RUN_ONLY + SOURCE_KEYS}
        req["model"] = self.model_name()
        req["dtype"] = dtype_name(resolve_dtype(self.dtype, resolve_device(self.device)))
        req["input"] = source.describe()
        return req


@dataclass
class Settings:
    """An ExtractConfig resolved against the model: what the chunker, the runner and the writer use."""
    sites: list
    max_length: int = DEFAULT_MAX_LENGTH
    mode: str = "document"          # document | packed
    exclude_bos: bool = False
    batch_tokens: int = 1024        # tokens per forward, padding included
    shard_tokens: int = 1 << 18     # stored tokens per shard (a chunk closes once it holds at least this many)
    store_dtype: str = "float32"
    limit_docs: Optional[int] = None
    pack: Optional[bool] = None     # sequences side by side in one row (None: the Runner decides, for tests)
    dims: dict = field(default_factory=dict)  # stored width of each site

    def key(self) -> dict:
        return asdict(self)


def differences(old_request: dict, old_resolved: dict, new_request: dict) -> list:
    """[(key, before, now)] for every setting that differs from the recorded run.

    A key matches when it was asked the same way (both left to the default, or the same value) or when the value
    asked now is what the first run resolved it to (--max-length 256 against a default that gave 256)."""
    missing = object()
    out = []
    for key, now in new_request.items():
        asked, got = old_request.get(key, missing), old_resolved.get(key, missing)
        if asked is missing and got is missing:
            continue  # recorded before this setting existed
        if now == asked or (now is not None and now == got):
            continue
        out.append((key, got if got is not missing else asked, now))
    return out


def describe_differences(diffs: list) -> str:
    def show(v):
        return "the default" if v is None else repr(v) if not isinstance(v, (int, float)) else str(v)

    return "; ".join(f"{k}: {show(before)} before, {show(now)} now" for k, before, now in diffs)
