"""Build a tiny Llama-architecture model with random weights and a locally trained tokenizer (no hub access needed).

Used by the vLLM tests and ``benchmarks/vllm_efficiency.py``: the real vLLM engine loads it from a folder exactly as it
loads a real checkpoint. Random weights give meaningless text, so callers assert token counts, streaming behaviour
and determinism, never exact words.

The build is deterministic (fixed corpus, fixed seed): two builds give the same token ids and the same weights.
head_dim is 32 because vLLM's CPU attention rejects smaller heads at the first forward pass.

    python tests/support/tiny_llama.py OUT_DIR      # builds (or reuses) the model and prints the folder
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

HIDDEN = 64
INTERMEDIATE = 128
LAYERS = 2
HEADS = 2  # head_dim = 64 / 2 = 32
VOCAB = 512
MAX_POSITIONS = 8192  # CNN articles with a 512-token vocabulary reach ~3,000 prompt tokens
SEED = 1234
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>"]  # ids 0..3
BUILD_VERSION = 1  # bump when the recipe changes so cached folders are rebuilt

# A fixed English corpus so the byte-level BPE learns ordinary news-like merges.
_CORPUS = [
    "Summarize the following news article in 128 tokens. Please output the summary only, without any other text.",
    "Article:", "Summary:",
    "The president said on Tuesday that the government would announce new measures to support families.",
    "Police officers arrested two men after a car crashed into a shop in the city centre early on Sunday morning.",
    "Scientists have discovered a new species of frog in the rainforest, according to a study published this week.",
    "The football club confirmed that its manager had signed a new three-year contract with the team.",
    "Shares fell sharply in London and New York as investors worried about rising interest rates and inflation.",
    "A spokesman for the hospital said the patient was in a stable condition and was expected to recover.",
    "Thousands of people gathered in the square to celebrate the national holiday with music and fireworks.",
    "The court heard that the company had failed to pay its workers for several months last year.",
    "CNN reported that the storm brought heavy rain and strong winds to the coast, cutting power to many homes.",
    "Officials warned that the number of cases could rise in the coming weeks if people did not follow the rules.",
]


def _corpus() -> list[str]:
    lines = []
    for i in range(40):
        for j, s in enumerate(_CORPUS):
            lines.append(s if (i + j) % 3 else s.lower())
    lines.extend(" ".join(str(n) for n in range(k, k + 20)) for k in range(0, 400, 20))
    return lines


def build_tokenizer(out_dir: Path):
    """Byte-level BPE (vocab 512) saved as a ``PreTrainedTokenizerFast`` that prepends BOS like Llama's."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
        model_max_length=MAX_POSITIONS,
    )
    fast.save_pretrained(str(out_dir))
    return fast


def build_model(out_dir: Path, vocab_size: int) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(SEED)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=HIDDEN,
        intermediate_size=INTERMEDIATE,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=HEADS,
        max_position_embeddings=MAX_POSITIONS,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=3,
        tie_word_embeddings=False,
        torch_dtype="float32",
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(str(out_dir), safe_serialization=True)
    # Greedy decoding everywhere: a generation_config with sampling defaults would change vLLM's defaults.
    gen = out_dir / "generation_config.json"
    gen.write_text(json.dumps({"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 3}) + "\n")


def build_tiny_llama(out_dir: str | os.PathLike) -> Path:
    """Build the model into ``out_dir`` (reused when a complete build of this version is already there)."""
    out = Path(out_dir)
    stamp = out / ".tiny_llama_build"
    if stamp.exists() and stamp.read_text().strip() == str(BUILD_VERSION):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    fast = build_tokenizer(tmp)
    if fast.bos_token_id != 1 or fast.eos_token_id != 2:
        raise RuntimeError(f"tiny tokenizer special ids are {fast.bos_token_id}/{fast.eos_token_id}, expected 1/2")
    build_model(tmp, len(fast))
    (tmp / ".tiny_llama_build").write_text(f"{BUILD_VERSION}\n")
    if out.exists():
        import shutil

        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


def prepare_tiny_dataset(tiny_model: Path, stories_dir: Path, out_dir: Path, samples: int) -> Path:
    """The real stories prepared with the tiny model's tokenizer (llama3.1-8b prompt template)."""
    from mlperf_assets.harness.dataset import prepare_dataset

    return prepare_dataset("stories", stories_dir, out_dir / "stories_tiny.json", tokenizer=str(tiny_model),
                           max_samples=samples)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/support/tiny_llama.py OUT_DIR")
    print(build_tiny_llama(sys.argv[1]))
