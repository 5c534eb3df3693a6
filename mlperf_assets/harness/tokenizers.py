"""Tokenizers for prompts and outputs: a built-in byte tokenizer, and Hugging Face tokenizers loaded lazily.

BOS follows the MLPerf reference: ``encode`` is the model tokenizer's ``encode`` with special tokens, so Llama 3.1
prompts start with BOS 128000 and GPT-J prompts get none (its tokenizer adds nothing). Output token ids (what a model
would generate) are encoded with ``add_special_tokens=False``.

The byte tokenizer (``"byte"``) needs no library: ids 0-255 are the UTF-8 bytes, 256 is BOS and 257 is EOS. It exists
for the extractive and replay backends when no model tokenizer is at hand; every figure made with it is labelled
"byte".
"""

from __future__ import annotations

import functools
from typing import Protocol, Sequence

from .errors import TokenizerError


class Tokenizer(Protocol):
    name: str
    kind: str  # "byte" | "hf"
    eos_token_id: int | None

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]: ...
    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str: ...
    def batch_decode(self, batch: Sequence[Sequence[int]], skip_special_tokens: bool = True) -> list[str]: ...


class ByteTokenizer:
    name = "byte"
    kind = "byte"
    bos_token_id = 256
    eos_token_id = 257
    vocab_size = 258

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids = list(text.encode("utf-8"))
        return [self.bos_token_id, *ids] if add_special_tokens else ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        data = bytearray()
        for i in ids:
            i = int(i)
            if 0 <= i < 256:
                data.append(i)
            elif not skip_special_tokens:
                data.extend(b"<s>" if i == self.bos_token_id else b"</s>" if i == self.eos_token_id else b"<unk>")
        return data.decode("utf-8", errors="replace")

    def batch_decode(self, batch: Sequence[Sequence[int]], skip_special_tokens: bool = True) -> list[str]:
        return [self.decode(ids, skip_special_tokens) for ids in batch]


class HFTokenizer:
    """A ``transformers.AutoTokenizer`` behind the same small interface."""

    kind = "hf"

    def __init__(self, name: str, tokenizer) -> None:
        self.name = name
        self._tok = tokenizer
        self.eos_token_id = tokenizer.eos_token_id
        self.bos_token_id = getattr(tokenizer, "bos_token_id", None)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=add_special_tokens))

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def batch_decode(self, batch: Sequence[Sequence[int]], skip_special_tokens: bool = True) -> list[str]:
        return self._tok.batch_decode([[int(i) for i in ids] for ids in batch], skip_special_tokens=skip_special_tokens)


@functools.lru_cache(maxsize=8)
def load_tokenizer(spec: str) -> Tokenizer:
    """``"byte"`` or a Hugging Face model name / local folder (needs ``transformers``; offline-friendly)."""
    if not spec:
        raise TokenizerError("empty tokenizer name: give 'byte' or a Hugging Face model name or local path")
    if spec == "byte":
        return ByteTokenizer()
    try:
        from transformers import AutoTokenizer
    except ImportError as exc:
        raise TokenizerError(
            f"tokenizer {spec!r} needs the 'transformers' package (pip install 'mlperf-dagster[hf]'), "
            "or use --tokenizer byte"
        ) from exc
    try:
        tok = AutoTokenizer.from_pretrained(spec)
    except Exception as exc:  # OSError for missing files/hub, ValueError for bad configs
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TokenizerError(f"cannot load tokenizer {spec!r}: {first}") from exc
    return HFTokenizer(spec, tok)
