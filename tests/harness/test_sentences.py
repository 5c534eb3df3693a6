"""split_sentences is nltk.sent_tokenize with NLTK's English punkt model, offline."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlperf_assets.harness import sentences
from mlperf_assets.harness.sentences import split_sentences


def _real_texts(cnn_dir: Path) -> list[str]:
    texts = [story.read_text(encoding="utf-8") for story in sorted((cnn_dir / "stories").glob("*.story"))]
    for line in (cnn_dir / "cnndm_test_mini_100.tsv").read_text(encoding="utf-8").splitlines():
        texts.extend(line.split("\t"))
    texts.extend((cnn_dir / "cnndm_test_mini_100.bart_output.txt").read_text(encoding="utf-8").splitlines())
    return texts


def _nltk_tokenizer_from_package_params():
    """NLTK's own tokenizer class fed the punkt package's English parameters, loaded the package's standard way
    (no files involved): the reference our file-based route must match."""
    import punkt
    from nltk.tokenize.punkt import PunktParameters, PunktSentenceTokenizer

    model = punkt.load_model("english")
    params = PunktParameters()
    params.abbrev_types.update(model.abbrev_types)
    params.collocations.update(model.collocations)
    params.sent_starters.update(model.sent_starters)
    params.ortho_context.update(model.ortho_context)
    tokenizer = PunktSentenceTokenizer()
    tokenizer._params = params
    return tokenizer


def test_nltk_reads_back_exactly_the_package_parameters():
    import punkt
    from nltk.data import find
    from nltk.tokenize.punkt import load_punkt_params

    sentences.ensure_punkt()
    loaded = load_punkt_params(find("tokenizers/punkt_tab/english/"))
    model = punkt.load_model("english")
    assert loaded.abbrev_types == set(model.abbrev_types)
    assert loaded.collocations == set(model.collocations)
    assert loaded.sent_starters == set(model.sent_starters)
    assert dict(loaded.ortho_context) == dict(model.ortho_context)
    # NLTK's punkt_tab English model: 156 abbreviations, 37 collocations, 39 sentence starters.
    assert (len(loaded.abbrev_types), len(loaded.collocations), len(loaded.sent_starters)) == (156, 37, 39)
    assert len(loaded.ortho_context) > 20000


def test_same_splits_as_nltk_english_punkt_on_real_cnn_texts(cnn_dir):
    from nltk.tokenize.punkt import PunktSentenceTokenizer

    reference = _nltk_tokenizer_from_package_params()
    untrained = PunktSentenceTokenizer()
    texts = _real_texts(cnn_dir)
    assert len(texts) == 320
    ours = [split_sentences(text) for text in texts]
    assert ours == [reference.tokenize(text) for text in texts]
    assert sum(len(s) for s in ours) > 2000
    # The comparison can fail: an untrained tokenizer splits differently on many of these texts.
    assert sum(split != untrained.tokenize(text) for split, text in zip(ours, texts)) > 20


def test_split_sentences_is_nltk_sent_tokenize():
    import nltk

    text = "Mr. Smith met Dr. Jones at St. Mary's on Jan. 5. They talked. Then what?"
    assert split_sentences(text) == nltk.sent_tokenize(text)
    assert split_sentences(text) == ["Mr. Smith met Dr. Jones at St. Mary's on Jan. 5.", "They talked.", "Then what?"]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("", []),
        ("   ", []),
        ("...", ["..."]),
        ("no final period", ["no final period"]),
        ("Zürich est belle. Ça va? Oui!", ["Zürich est belle.", "Ça va?", "Oui!"]),
    ],
)
def test_edge_cases(text, expected):
    assert split_sentences(text) == expected


def _run_fresh(tmp_path: Path, code: str, **env_extra: str) -> subprocess.CompletedProcess:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path / "home"),
        "XDG_CACHE_HOME": str(tmp_path / "xdg"),
        "NLTK_DATA": str(tmp_path / "no-nltk-data"),
        **env_extra,
    }
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


def _skip_if_real_punkt_tab_installed(tmp_path: Path) -> None:
    probe = _run_fresh(tmp_path, "import nltk\nnltk.data.find('tokenizers/punkt_tab/english/')")
    if probe.returncode == 0:
        pytest.skip("NLTK's real punkt_tab is installed on this machine: nothing needs writing")


def test_fresh_process_without_data_writes_cache_once_and_imports_only_nltk(tmp_path):
    _skip_if_real_punkt_tab_installed(tmp_path)
    cache = tmp_path / "cache"
    code = (
        "import sys\n"
        "from mlperf_assets.harness.sentences import split_sentences\n"
        "print(split_sentences('The U.S. team won. Fans cheered.'))\n"
        "heavy = sorted(m for m in ('dagster', 'duckdb', 'transformers', 'rouge_score') if m in sys.modules)\n"
        "print(heavy)\n"
    )
    first = _run_fresh(tmp_path, code, MLPERF_DAGSTER_NLTK_DATA=str(cache))
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == ["['The U.S. team won.', 'Fans cheered.']", "[]"]
    folder = cache / "tokenizers" / "punkt_tab" / "english"
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["abbrev_types.txt", "collocations.tab", "ortho_context.tab", "sent_starters.txt"]
    assert not (tmp_path / "home").exists()  # nothing written into the home directory
    mtimes = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    second = _run_fresh(tmp_path, code, MLPERF_DAGSTER_NLTK_DATA=str(cache))
    assert second.returncode == 0, second.stderr
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == mtimes  # reused, not rewritten


def test_damaged_cache_is_replaced(tmp_path):
    folder = sentences.write_punkt_tab(tmp_path)
    (folder / "abbrev_types.txt").write_text("mr\n", encoding="utf-8")
    (folder / "ortho_context.tab").unlink()
    again = sentences.write_punkt_tab(tmp_path)
    assert again == folder
    expected = sentences.punkt_tab_files()
    assert {p.name: p.read_text(encoding="utf-8") for p in folder.iterdir()} == expected
    assert [p.name for p in folder.parent.iterdir()] == ["english"]  # no staging folders left behind


def test_unwritable_cache_gives_one_clear_error(tmp_path):
    _skip_if_real_punkt_tab_installed(tmp_path)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder", encoding="utf-8")
    result = _run_fresh(
        tmp_path,
        "from mlperf_assets.harness.sentences import split_sentences\nsplit_sentences('A. B.')",
        MLPERF_DAGSTER_NLTK_DATA=str(blocker / "cache"),
    )
    assert result.returncode != 0
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("mlperf_assets.harness.sentences.SentenceSplitterUnavailable: cannot write")
    assert str(blocker) in last_line and "MLPERF_DAGSTER_NLTK_DATA" in last_line
