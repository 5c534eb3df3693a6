"""A stand-in tokenizer for the echo server's curve, built offline: the client counts tokens (ISL, OSL, TPOT) only
with a tokenizer, and the echo server has no model whose tokenizer it could load, nor does a newcomer without hub
access. A small byte-level BPE trained on a fixed text, saved as a Hugging Face tokenizer folder the client's
``AutoTokenizer`` loads. Its token counts are NOT Llama 3.1's: a curve counted with it is unofficial.

Run by the reference client's own Python (it has ``tokenizers`` and ``transformers``); this file imports nothing of
the project:

    CLIENT_PYTHON echo_tokenizer.py OUT_DIR     # builds OUT_DIR once (atomically); an existing build is kept
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

VERSION = 2  # bump when the recipe changes: an older build is then rebuilt
STAMP = "standin_tokenizer.json"  # written last: a folder without it is no build
VOCAB = 1024
SPECIAL = ["<unk>", "<s>", "</s>", "<pad>"]
# the client frames its token counts with the tokenizer's chat template (its baseline of an empty assistant turn)
CHAT_TEMPLATE = ("{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}</s>{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")

_TEXT = (
    "Summarize the following news article in 128 tokens. Please output the summary only, without any other text. "
    "Article: Summary: The government announced on Monday new measures to help families pay for energy this winter. "
    "Police said two people were taken to hospital after a crash on the motorway early on Saturday morning. "
    "Researchers published a study this week showing that the species had returned to the river after decades. "
    "The club confirmed its coach had agreed a new contract, and supporters celebrated outside the stadium. "
    "Markets fell in London, New York and Tokyo as investors worried about interest rates and rising prices. "
    "A spokeswoman for the company said it would cooperate with the investigation and review its procedures. "
    "Thousands of people gathered in the city centre for the festival, with music, food and fireworks at night. "
    "The court was told the firm had not paid its workers for months, and the judge adjourned the case. "
    "Heavy rain and strong winds hit the coast, cutting power to homes and closing schools and roads. "
    "Officials warned that the number of cases could rise in the coming weeks, CNN reported on Thursday. "
)


def is_built(out: Path) -> bool:
    try:
        return json.loads((out / STAMP).read_text(encoding="utf-8")).get("version") == VERSION
    except (OSError, ValueError, AttributeError):
        return False


def _corpus() -> list[str]:
    sentences = [s.strip() + "." for s in _TEXT.split(". ") if s.strip()]
    lines = [s if i % 2 else s.lower() for i in range(30) for s in sentences]
    return lines + [" ".join(str(n) for n in range(k, k + 25)) for k in range(0, 1000, 25)]


def build(out: Path) -> Path:
    """Build the tokenizer folder at ``out`` unless a build of this version is there; returns ``out``."""
    if is_built(out):
        return out
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(_corpus(), trainer=trainers.BpeTrainer(
        vocab_size=VOCAB, special_tokens=SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", tok.token_to_id("<s>"))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<pad>", model_max_length=131072)
    fast.chat_template = CHAT_TEMPLATE
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        os.chmod(tmp, 0o755)
        fast.save_pretrained(str(tmp))
        (tmp / STAMP).write_text(json.dumps({
            "version": VERSION, "standin": True, "vocab_size": len(fast),
            "note": "stand-in tokenizer for the echo server (byte-level BPE on a fixed text); not Llama 3.1's: "
                    "token counts and every figure from them are unofficial"}, indent=1) + "\n", encoding="utf-8")
        if out.exists():  # an older or broken build
            shutil.rmtree(out, ignore_errors=True)
        try:
            os.rename(tmp, out)
        except OSError:
            if not is_built(out):  # not another point's build that won the race
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: echo_tokenizer.py OUT_DIR")
    sys.path.pop(0)  # this file's folder holds the harness's own tokenizers.py, which would shadow the library
    print(build(Path(sys.argv[1])))
