"""Base models for `synth train` by spec: the embedded GGUF, a local Hugging Face folder, or a Hub id.

    resolve_base_model("embedded:0.5b")   # the bundled Qwen2.5-Coder-0.5B GGUF, converted once (cached, verified)
    resolve_base_model("embedded")        # the 1.5B
    resolve_base_model("./ckpt/sft")      # a folder with config.json (also `hf:./ckpt/sft`)
    resolve_base_model("Qwen/Qwen2.5-0.5B-Instruct")  # a Hub id, where the Hub is reachable

A GGUF is dequantised by transformers (`from_pretrained(folder, gguf_file=…)`, fp32) and saved as a normal model
folder — tokenizer, config, safetensors — under `~/.cache/ds-synth/hf/<gguf name>/`, once: the folder is written
next to its final place and renamed into it under a file lock, and a stamp records the GGUF it came from (name,
size, sha256 when known) and the size of every file written. Later calls check the stamp and the file sizes and
reuse the folder. The llama.cpp tokenizer pads its vocabulary with `[PAD…]` placeholder tokens up to the
embedding size; they are dropped, so the tokenizer equals the model's original one (the tag tokens `train` adds
then take ids inside the existing embedding matrix, as with the Hugging Face release).

`check_memory` estimates the RAM a training run needs (weights, trainable state, activations at max_length) and
stops with one line naming a smaller choice when the machine has too little.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synth.filelock import file_lock
from train.errors import TrainError, require_train_extra

log = logging.getLogger(__name__)

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_PAD_TOKEN = re.compile(r"^\[PAD\d+\]$")
STAMP = "ds-synth-conversion.json"
_STAMP_VERSION = 1


@dataclass(frozen=True)
class BaseModelRef:
    spec: str  # as the user wrote it
    path: Path  # a local Hugging Face model folder
    source: str  # "embedded" | "gguf" | "folder" | "hub"
    gguf: Path | None = None  # the GGUF it was converted from
    num_parameters: int | None = None

    @property
    def label(self) -> str:
        return self.spec if self.source in ("embedded", "gguf") else str(self.path)


def hf_cache_dir() -> Path:
    """Where converted GGUF models live: $DS_SYNTH_CACHE/hf, else ~/.cache/ds-synth/hf."""
    root = os.environ.get("DS_SYNTH_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "ds-synth") / "hf"


def resolve_base_model(spec: str | Path, *, cache_dir: Path | None = None) -> BaseModelRef:
    """A local Hugging Face folder for `spec`, converting (once) or downloading it when needed."""
    text = str(spec).strip()
    if not text:
        raise TrainError("--model: empty model spec; use embedded, embedded:0.5b, a model folder or a Hub id")
    if text.startswith("hf:"):
        text = text[3:]
    if text == "embedded" or text.startswith("embedded:"):
        return _embedded(text, cache_dir)
    path = Path(text).expanduser()
    if path.is_file() and path.suffix.lower() == ".gguf":
        folder = convert_gguf(path, cache_dir=cache_dir)
        return BaseModelRef(text, folder, "gguf", path, count_parameters(folder))
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise TrainError(f"--model {text}: {path} is not a Hugging Face model folder (no config.json there)")
        return BaseModelRef(text, path, "folder", None, count_parameters(path))
    if path.exists():
        raise TrainError(f"--model {text}: not a model folder or a .gguf file")
    if _HUB_ID.match(text):
        folder = _hub_snapshot(text)
        return BaseModelRef(text, folder, "hub", None, count_parameters(folder))
    raise TrainError(f"--model {text}: no such folder or file, and not a Hub id (owner/name); "
                     "use embedded, embedded:0.5b, a model folder or a Hub id")


def _embedded(text: str, cache_dir: Path | None) -> BaseModelRef:
    from synth.llm.base import ModelError
    from synth.llm.model_files import DEFAULT_SIZE, EMBEDDED_MODELS, ensure_model_file

    size = text.partition(":")[2].strip().lower() or DEFAULT_SIZE
    if size not in EMBEDDED_MODELS:
        path = Path(size).expanduser()
        if path.is_file():
            folder = convert_gguf(path, cache_dir=cache_dir)
            return BaseModelRef(text, folder, "gguf", path, count_parameters(folder))
        raise TrainError(f"--model {text}: unknown embedded model {size!r}; use embedded (1.5b), embedded:0.5b "
                         "or embedded:/path/to/model.gguf")
    model_file = EMBEDDED_MODELS[size]
    try:
        gguf = ensure_model_file(model_file)
    except ModelError as exc:
        raise TrainError(str(exc)) from None
    folder = convert_gguf(gguf, cache_dir=cache_dir, sha256=model_file.sha256)
    return BaseModelRef(text, folder, "embedded", gguf, count_parameters(folder))


# --- GGUF -> Hugging Face folder ---------------------------------------------------------------------------------


def gguf_architecture(gguf: Path) -> str:
    """`general.architecture` of a GGUF file (reads the header only)."""
    require_train_extra("gguf")
    import gguf as gguf_lib

    try:
        reader = gguf_lib.GGUFReader(str(gguf))
        field = reader.fields["general.architecture"]
        return bytes(field.parts[field.data[0]]).decode("utf-8")
    except (KeyError, ValueError, OSError, struct.error) as exc:
        raise TrainError(f"{gguf}: not a readable GGUF file ({type(exc).__name__}: {exc})") from None


def supported_gguf_architectures() -> list[str]:
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    return sorted(GGUF_SUPPORTED_ARCHITECTURES)


def convert_gguf(gguf: Path, *, cache_dir: Path | None = None, sha256: str | None = None) -> Path:
    """The Hugging Face folder converted from `gguf` (fp32), converting it first if the cache has no valid one."""
    require_train_extra("gguf")
    gguf = Path(gguf).resolve()
    target = (cache_dir or hf_cache_dir()) / gguf.stem
    source = {"name": gguf.name, "size": gguf.stat().st_size, "sha256": sha256}
    if _stamp_ok(target, source):
        return target
    arch = gguf_architecture(gguf)
    supported = supported_gguf_architectures()
    if arch not in supported:
        raise TrainError(f"{gguf.name}: GGUF architecture {arch!r} cannot be loaded by transformers "
                         f"(supported: {', '.join(supported)}); train from a Hugging Face folder instead")
    target.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(target.parent / f".{target.name}.lock"):
        if _stamp_ok(target, source):
            return target
        log.warning("converting %s to a Hugging Face folder (once) in %s", gguf.name, target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            _convert_into(gguf, tmp)
            files = {p.name: p.stat().st_size for p in sorted(tmp.iterdir()) if p.is_file()}
            (tmp / STAMP).write_text(json.dumps({"version": _STAMP_VERSION, "source": source, "files": files},
                                                indent=2) + "\n", encoding="utf-8")
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return target


def _convert_into(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    except (ValueError, KeyError, NotImplementedError) as exc:
        raise TrainError(f"{gguf.name}: transformers could not convert it "
                         f"({type(exc).__name__}: {' '.join(str(exc).split())[:200]})") from None
    # The weights are dequantised now: drop the GGUF quantizer so the folder saves (and later loads) as plain fp32.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    _drop_pad_placeholders(out)


def _drop_pad_placeholders(folder: Path) -> int:
    """Remove llama.cpp's `[PADnnn]` vocabulary fillers (ids past the real vocabulary) from tokenizer.json."""
    path = folder / "tokenizer.json"
    if not path.is_file():
        return 0
    data = json.loads(path.read_text(encoding="utf-8"))
    vocab = data.get("model", {}).get("vocab")
    if not isinstance(vocab, dict):
        return 0
    pads = {token for token in vocab if _PAD_TOKEN.match(token)}
    if not pads:
        return 0
    first_pad = min(vocab[t] for t in pads)
    real_ids = [i for t, i in vocab.items() if t not in pads]
    real_ids += [int(t.get("id", 0)) for t in data.get("added_tokens", [])]
    if max(real_ids, default=-1) >= first_pad or max(vocab.values()) - first_pad + 1 != len(pads):
        return 0  # not llama.cpp's contiguous tail padding: leave the vocabulary alone
    data["model"]["vocab"] = {t: i for t, i in vocab.items() if t not in pads}
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return len(pads)


def _stamp_ok(target: Path, source: dict[str, Any]) -> bool:
    try:
        stamp = json.loads((target / STAMP).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if stamp.get("version") != _STAMP_VERSION or stamp.get("source") != source:
        return False
    files = stamp.get("files") or {}
    if not files or "config.json" not in files:
        return False
    for name, size in files.items():
        try:
            if (target / name).stat().st_size != size:
                return False
        except OSError:
            return False
    return True




def _hub_snapshot(repo: str) -> Path:
    require_train_extra()
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo, allow_patterns=[
            "*.json", "*.safetensors", "*.txt", "*.model", "*.jinja", "*.tiktoken", "merges.txt"]))
    except Exception as exc:  # offline, no such repo, auth: one line
        raise TrainError(f"--model {repo}: cannot download it from the Hugging Face Hub "
                         f"({type(exc).__name__}: {' '.join(str(exc).split())[:160]}); "
                         "offline, use embedded, embedded:0.5b or a local model folder") from None


# --- sizes and memory --------------------------------------------------------------------------------------------


def count_parameters(folder: Path) -> int | None:
    """Parameters in a model folder's safetensors files (read from their headers; nothing is loaded)."""
    total = 0
    files = sorted(Path(folder).glob("*.safetensors"))
    for file in files:
        try:
            with file.open("rb") as fh:
                (length,) = struct.unpack("<Q", fh.read(8))
                header = json.loads(fh.read(length))
        except (OSError, ValueError, struct.error):
            return None
        for name, info in header.items():
            if name == "__metadata__":
                continue
            count = 1
            for dim in info.get("shape", []):
                count *= int(dim)
            total += count
    return total or None


def model_dimensions(folder: Path) -> dict[str, int]:
    """hidden size, layers, FFN width and vocabulary from config.json (0 when unknown)."""
    try:
        config = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"hidden": 0, "layers": 0, "ffn": 0, "vocab": 0, "tied": 1}
    config = config.get("text_config", config)
    return {"hidden": int(config.get("hidden_size") or 0), "layers": int(config.get("num_hidden_layers") or 0),
            "ffn": int(config.get("intermediate_size") or 0), "vocab": int(config.get("vocab_size") or 0),
            "tied": int(bool(config.get("tie_word_embeddings", False)))}


def estimate_training_memory(folder: Path, *, lora: bool, max_length: int, gradient_checkpointing: bool = False,
                             num_parameters: int | None = None) -> int:
    """Bytes a CPU training run of this model needs at most, roughly (fp32 weights, AdamW).

    weights 4 B/param; full fine-tuning adds gradients and two AdamW moments (12 B/param); LoRA trains the output
    head fully when it is not tied (16 B per head parameter) and adapters of ~1 % of the weights; activations per
    token and layer ~ (24·hidden + 8·ffn) floats (measured with TRL on Qwen2.5-0.5B), 4 layers' worth with gradient
    checkpointing; plus ~1.5 GB of process overhead (torch, tokenizer, data).
    """
    params = num_parameters or count_parameters(folder) or 0
    dims = model_dimensions(folder)
    weights = 4 * params
    if lora:
        head = 0 if dims["tied"] else dims["vocab"] * dims["hidden"]
        trainable = 16 * (head + params // 100)
    else:
        trainable = 12 * params
    layers = dims["layers"] if not gradient_checkpointing else min(dims["layers"], 4)
    activations = 4 * max_length * layers * (24 * dims["hidden"] + 8 * dims["ffn"])
    return int(weights + trainable + activations + 1.5 * 2**30)


def available_memory() -> int:
    """Bytes this process can still use: MemAvailable, lowered by a cgroup memory limit when there is one."""
    available = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except OSError:
        pass
    if not available:
        try:
            import psutil

            available = int(psutil.virtual_memory().available)
        except ImportError:
            return 0
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            limit = Path(limit_file).read_text().strip()
            usage = int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 2**60:
            available = min(available, int(limit) - usage)
    return max(0, available)


def check_memory(ref: BaseModelRef, *, lora: bool, max_length: int, gradient_checkpointing: bool = False,
                 available: int | None = None) -> int:
    """The estimate in bytes; TrainError (one line, with what to change) when it exceeds the available memory."""
    need = estimate_training_memory(ref.path, lora=lora, max_length=max_length,
                                    gradient_checkpointing=gradient_checkpointing,
                                    num_parameters=ref.num_parameters)
    have = available_memory() if available is None else available
    if have and need > have:
        params = f"{ref.num_parameters / 1e9:.2f}B-parameter " if ref.num_parameters else ""
        hint = []
        if not lora:
            hint.append("LoRA (--lora)")
        if not gradient_checkpointing:
            hint.append("gradient_checkpointing: true")
        hint.append("a smaller max_length")
        if ref.source == "embedded" and not ref.spec.endswith("0.5b"):
            hint.append("--model embedded:0.5b")
        raise TrainError(f"not enough memory to train {ref.label}: this {params}model needs about "
                         f"{need / 2**30:.1f} GB at max_length {max_length} "
                         f"({'LoRA' if lora else 'full fine-tuning'}), {have / 2**30:.1f} GB is available; "
                         f"try {', '.join(hint)} (or --skip-memory-check)")
    return need


__all__ = ["BaseModelRef", "resolve_base_model", "convert_gguf", "gguf_architecture", "hf_cache_dir",
           "count_parameters", "estimate_training_memory", "available_memory", "check_memory", "STAMP"]
