"""A tokenizer in Llama 3's id layout for the random-weight model, when the real one cannot be downloaded.

Byte-level BPE trained on CNN/DailyMail text, padded to Llama 3's layout: BPE ids first, filler entries up to
127,999 (they decode as ``<|filler_N|>``), then Llama 3's 256 special tokens at 128,000-128,255 (BOS 128000, EOS ids
128001/128008/128009). Every id below 128,256 decodes, and encode adds BOS as Llama 3's tokenizer does. The BPE
vocabulary size is bisected so that the articles come out at about ``--chars-per-token`` characters per token (Llama
3 gives about 4.2 on English news), so prompt lengths, which throughput depends on, resemble the real benchmark's.

    python benchmarks/gpu/standin_tokenizer.py OUT_DIR (--stories DIR | --tsv FILE | --jsonl FILE)... [--chars-per-token 4.2]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

VOCAB = 128256
FIRST_SPECIAL = 128000
SPECIAL_NAMES = {0: "<|begin_of_text|>", 1: "<|end_of_text|>", 2: "<|reserved_special_token_0|>",
                 3: "<|reserved_special_token_1|>", 4: "<|finetune_right_pad_id|>", 5: "<|reserved_special_token_2|>",
                 6: "<|start_header_id|>", 7: "<|end_header_id|>", 8: "<|eom_id|>", 9: "<|eot_id|>",
                 10: "<|python_tag|>"}


def special_name(k: int) -> str:
    return SPECIAL_NAMES.get(k, f"<|reserved_special_token_{k - 8}|>")


def corpus(stories: list[Path], tsvs: list[Path], jsonls: list[Path]) -> list[str]:
    texts = []
    for folder in stories:
        for f in sorted(folder.glob("*.story")):
            lines = [line.strip() for line in f.read_text(encoding="utf-8").split("\n")]
            texts.append(" ".join(x for x in lines if x and not x.startswith("@highlight")))
    for tsv in tsvs:
        for line in tsv.read_text(encoding="utf-8").splitlines():
            if line.strip():
                article, _, highlights = line.partition("\t")
                texts += [article, highlights]
    for jsonl in jsonls:
        for line in jsonl.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                texts += [row.get("article", ""), row.get("highlights", "")]
    return [t for t in texts if t]


def _train(texts: list[str], bpe_vocab: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=bpe_vocab, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False, min_frequency=2)
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def _chars_per_token(tok, texts: list[str]) -> float:
    return sum(map(len, texts)) / max(1, sum(len(e.ids) for e in tok.encode_batch(texts)))


def build(out: Path, texts: list[str], target_cpt: float = 4.2) -> dict:
    from tokenizers import AddedToken, Tokenizer, processors
    from transformers import PreTrainedTokenizerFast

    if not texts:
        raise SystemExit("standin_tokenizer: no text to train on (give --stories, --tsv or --jsonl)")
    lo, hi, best = 300, 60000, None
    for _ in range(14):  # bisect the BPE vocabulary size on characters per token
        mid = (lo + hi) // 2
        tok = _train(texts, mid)
        cpt, size = _chars_per_token(tok, texts), tok.get_vocab_size()
        if best is None or abs(cpt - target_cpt) < abs(best[1] - target_cpt):
            best = (mid, cpt)
        if cpt < target_cpt:
            lo = mid + 1
        else:
            hi = mid - 1
        if lo > hi or (size < mid and cpt < target_cpt):  # converged, or the trainer ran out of merges
            break
    mid, cpt = best
    spec = json.loads(_train(texts, mid).to_str())
    vocab = spec["model"]["vocab"]
    n_bpe = len(vocab)
    for i in range(n_bpe, FIRST_SPECIAL):
        vocab[f"<|filler_{i}|>"] = i
    tok = Tokenizer.from_str(json.dumps(spec))
    tok.add_special_tokens([AddedToken(special_name(k), special=True, normalized=False)
                            for k in range(VOCAB - FIRST_SPECIAL)])
    if tok.get_vocab_size() != VOCAB or tok.token_to_id("<|eot_id|>") != 128009:
        raise SystemExit(f"standin_tokenizer: built {tok.get_vocab_size()} ids, expected Llama 3's {VOCAB}")
    tok.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|> $B",
        special_tokens=[("<|begin_of_text|>", FIRST_SPECIAL)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>",
                                   model_max_length=131072)
    out.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(out))
    info = {"bpe_vocab": n_bpe, "chars_per_token": round(cpt, 3), "target_chars_per_token": target_cpt,
            "vocab_size": len(fast), "bos": fast.bos_token_id, "eos": fast.eos_token_id, "standin": True}
    (out / "standin_tokenizer.json").write_text(json.dumps(info, indent=1) + "\n")
    return info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--stories", type=Path, action="append", default=[], help="folder of CNN .story files")
    ap.add_argument("--tsv", type=Path, action="append", default=[], help="article<TAB>highlights lines")
    ap.add_argument("--jsonl", type=Path, action="append", default=[], help="{article, highlights} lines")
    ap.add_argument("--chars-per-token", type=float, default=4.2)
    a = ap.parse_args(argv)
    print(json.dumps(build(a.out, corpus(a.stories, a.tsv, a.jsonl), a.chars_per_token)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
