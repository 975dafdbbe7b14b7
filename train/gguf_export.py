"""`synth train export-gguf CKPT`: a trained checkpoint as a GGUF file for the embedded llama.cpp backend.

    export_gguf("ckpt/sft", "ckpt/sft/model-q8_0.gguf", qtype="q8_0")
    synth eval --model embedded:ckpt/sft/model-q8_0.gguf …   # deepanalyze family: the GGUF has the tag tokens

Writes the architecture's hyper-parameters, the tokenizer (byte-level BPE: tokens, types, merges, special ids,
the chat template — the deepanalyze template that renders Execute inline, which llama.cpp applies with its jinja
engine) and every tensor under llama.cpp's names. Norms and biases stay float32; matrices are written as
`f32`, `f16`, `bf16` or `q8_0` (8-bit blocks; matrices whose rows are not a multiple of 32 fall back to f16).

Supported: the `qwen2` architecture (the embedded Qwen2.5-Coder models and `train.tiny`). Other architectures get
one line pointing at llama.cpp's own `convert_hf_to_gguf.py`. To compare a base model with its fine-tuned
checkpoint on this backend, export BOTH with the same type (`synth experiment` does): the bundled Q4_K_M base
against a q8_0 checkpoint would measure the quantisation as much as the training.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Iterator

from train.errors import TrainError, require_train_extra

log = logging.getLogger(__name__)
QTYPES = ("f32", "f16", "bf16", "q8_0")
ARCHITECTURES = ("qwen2",)
_FILE_TYPES = {"f32": 0, "f16": 1, "q8_0": 7, "bf16": 32}  # llama.cpp's LLAMA_FTYPE_* values


def export_gguf(checkpoint: str | Path, out: str | Path | None = None, *, qtype: str = "q8_0",
                name: str | None = None) -> Path:
    """Write `checkpoint` (a Hugging Face folder) as a GGUF file; return its path (default CKPT/model-QTYPE.gguf)."""
    require_train_extra("gguf")
    import gguf

    folder = Path(checkpoint).expanduser()
    if qtype not in QTYPES:
        raise TrainError(f"--type {qtype!r}: choose one of {', '.join(QTYPES)}")
    if not (folder / "config.json").is_file():
        raise TrainError(f"{folder}: not a Hugging Face model folder (no config.json there)")
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    arch = config.get("model_type")
    if arch not in ARCHITECTURES:
        raise TrainError(f"{folder}: export-gguf writes the {', '.join(ARCHITECTURES)} architecture, this model is "
                         f"{arch!r}; use llama.cpp's convert_hf_to_gguf.py for it")
    if not sorted(folder.glob("*.safetensors")):
        raise TrainError(f"{folder}: no .safetensors weights to export")
    out = Path(out) if out is not None else folder / f"model-{qtype}.gguf"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")

    writer = gguf.GGUFWriter(str(tmp), "qwen2")
    try:
        _write_hparams(writer, config, qtype, name or folder.resolve().name)
        _write_tokenizer(writer, folder, int(config["vocab_size"]))
        for tensor_name, array in _tensors(folder, config):
            _add_tensor(writer, tensor_name, array, qtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    tmp.replace(out)
    return out


def _write_hparams(writer: Any, config: dict[str, Any], qtype: str, name: str) -> None:
    rope = config.get("rope_parameters") or {}
    theta = rope.get("rope_theta", config.get("rope_theta", 10000.0))
    heads = int(config["num_attention_heads"])
    writer.add_name(name)
    writer.add_context_length(int(config.get("max_position_embeddings") or 32768))
    writer.add_embedding_length(int(config["hidden_size"]))
    writer.add_block_count(int(config["num_hidden_layers"]))
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_head_count(heads)
    writer.add_head_count_kv(int(config.get("num_key_value_heads") or heads))
    writer.add_rope_freq_base(float(theta))
    writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps") or 1e-6))
    writer.add_file_type(_FILE_TYPES[qtype])


def _write_tokenizer(writer: Any, folder: Path, vocab_size: int) -> None:
    import gguf

    path = folder / "tokenizer.json"
    if not path.is_file():
        raise TrainError(f"{folder}: no tokenizer.json (export-gguf needs a fast byte-level BPE tokenizer)")
    data = json.loads(path.read_text(encoding="utf-8"))
    model = data.get("model") or {}
    if model.get("type") != "BPE":
        raise TrainError(f"{folder}: the tokenizer is {model.get('type')!r}, export-gguf writes byte-level BPE only")
    by_id: dict[int, str] = {int(i): t for t, i in model.get("vocab", {}).items()}
    types: dict[int, int] = {}
    for added in data.get("added_tokens", []):
        by_id[int(added["id"])] = added["content"]
        types[int(added["id"])] = (gguf.TokenType.CONTROL if added.get("special")
                                   else gguf.TokenType.USER_DEFINED)
    size = max(vocab_size, max(by_id) + 1)
    tokens, token_types = [], []
    for i in range(size):
        if i in by_id:
            tokens.append(by_id[i])
            token_types.append(int(types.get(i, gguf.TokenType.NORMAL)))
        else:
            tokens.append(f"[PAD{i}]")
            token_types.append(int(gguf.TokenType.UNUSED))
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    settings = _tokenizer_settings(folder)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list(tokens)
    writer.add_token_types(token_types)
    writer.add_token_merges(merges)
    token_ids = {t: i for i, t in by_id.items()}
    for key, adder in (("eos_token", writer.add_eos_token_id), ("pad_token", writer.add_pad_token_id),
                       ("bos_token", writer.add_bos_token_id)):
        token = settings.get(key)
        if isinstance(token, dict):
            token = token.get("content")
        if token in token_ids:
            adder(token_ids[token])
    writer.add_add_bos_token(False)
    template = settings.get("chat_template")
    if template:
        writer.add_chat_template(template)


def _tokenizer_settings(folder: Path) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    config = folder / "tokenizer_config.json"
    if config.is_file():
        settings = json.loads(config.read_text(encoding="utf-8"))
    jinja = folder / "chat_template.jinja"
    if not settings.get("chat_template") and jinja.is_file():
        settings["chat_template"] = jinja.read_text(encoding="utf-8")
    return settings


def _tensors(folder: Path, config: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """(llama.cpp name, float32 numpy array) for every weight, one file and tensor at a time."""
    import gguf
    from safetensors import safe_open

    layers = int(config["num_hidden_layers"])
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.QWEN2, layers)
    seen_head = False
    embed = None
    for file in sorted(folder.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as handle:
            for key in handle.keys():
                base, _, suffix = key.rpartition(".")
                mapped = names.get_name(base)
                if mapped is None:
                    if "rotary_emb" in key:
                        continue
                    raise TrainError(f"{file.name}: tensor {key!r} has no llama.cpp name for qwen2")
                array = handle.get_tensor(key).float().numpy()
                if mapped == "output":
                    seen_head = True
                if mapped == "token_embd" and config.get("tie_word_embeddings"):
                    embed = array
                yield f"{mapped}.{suffix}", array
    if not seen_head and embed is None and not config.get("tie_word_embeddings"):
        raise TrainError(f"{folder}: no lm_head weights and the embeddings are not tied")


def _add_tensor(writer: Any, name: str, array: Any, qtype: str) -> None:
    import gguf
    import numpy as np

    if array.ndim < 2 or qtype == "f32":
        writer.add_tensor(name, np.ascontiguousarray(array, dtype=np.float32))
        return
    if qtype == "f16" or (qtype == "q8_0" and array.shape[-1] % 32):
        writer.add_tensor(name, np.ascontiguousarray(array, dtype=np.float16))
        return
    kind = gguf.GGMLQuantizationType.Q8_0 if qtype == "q8_0" else gguf.GGMLQuantizationType.BF16
    writer.add_tensor(name, gguf.quants.quantize(np.ascontiguousarray(array, dtype=np.float32), kind),
                      raw_dtype=kind)


def gguf_spec(path: Path, family: str | None = None) -> str:
    """The model spec that runs an exported file on the embedded backend."""
    return f"embedded:{path}" + (f"?family={family}" if family else "")


__all__ = ["export_gguf", "gguf_spec", "QTYPES", "ARCHITECTURES"]
