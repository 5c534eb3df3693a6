"""F2: the harness never loses SIGINT / SIGTERM, at any moment of its life (real processes, real signals).

Before the fix the SIGTERM handler raised an exception, which Python drops when the signal lands in a ``__del__``
finalizer (the ``regex`` package's, while the extractive backend starts): 3 trials in 40 ran to the end and exited 0
with the manifest ``completed``. Now the handler records the signal (``harness/interrupts.py``) and the run checks the
record at its safe points.

- ``test_signal_inside_a_finalizer_during_backend_start``: the F2 mechanism made deterministic (a backend whose start
  runs a slow ``__del__``; the signal is sent while it runs). Old code: rc 0, ``completed``.
- ``test_signal_sweep_over_the_whole_start_up``: the finding's reproduction loop (Server, extractive,
  ``--min-duration-ms 4000``), with signal delays spread evenly from 0 s (interpreter start-up, before the handlers
  exist) through imports, input checks, the backend's start and into the LoadGen run, four trials at a time.
- ``test_signal_while_finishing_is_never_completed`` / ``test_second_signal_leaves_at_once``: the end of a run.
- ``test_prepare_dataset_signal_writes_nothing``: prepare-dataset either finishes (0, a complete file) or not (130 /
  143, no file), never between.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from mlperf_assets.harness.dataset import prepare_dataset

PROJECT = Path(__file__).resolve().parents[2]
CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}
# The finding's command line, minus the output folder.
SERVER_RUN = ["--scenario", "Server", "--mode", "performance", "--backend", "extractive", "--target-qps", "50",
              "--min-duration-ms", "4000", "--min-query-count", "10"]


@pytest.fixture(scope="module")
def dataset(stories_dir: Path, tmp_path_factory) -> Path:
    return prepare_dataset("stories", stories_dir, tmp_path_factory.mktemp("ds") / "good.json", tokenizer="byte")


def _manifest(out: Path) -> dict | None:
    try:
        return json.loads((out / "run_manifest.json").read_text())
    except FileNotFoundError:
        return None


def _clean(text: str) -> bool:
    return "Traceback" not in text and "Exception ignored" not in text


def _trial(argv: list[str], delay: float, sig: int, cwd: Path = PROJECT) -> tuple[int, str, float]:
    """Start ``argv``, send ``sig`` after ``delay`` s; (exit code, stderr, seconds from the signal to the exit)."""
    proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(delay)
        proc.send_signal(sig)
        t_sig = time.monotonic()
        _, err = proc.communicate(timeout=60)
        return proc.returncode, err, time.monotonic() - t_sig
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _harness(*args: str) -> list[str]:
    return [sys.executable, "-m", "mlperf_assets.harness", *args]


def _assert_interrupted(out: Path, rc: int, err: str, sig: int, what: str) -> None:
    assert rc == CODES[sig], f"{what}: rc {rc}, expected {CODES[sig]}\n{err}"
    m = _manifest(out)
    assert m is not None and m["exit_status"] == "interrupted", f"{what}: manifest {m and m['exit_status']}\n{err}"
    assert m["finished_at"] and m["error"] in ("terminated (SIGTERM)", "interrupted (SIGINT, Ctrl-C)")
    assert _clean(err), f"{what}: traceback on stderr\n{err}"
    lines = err.strip().splitlines()
    assert lines and lines[-1] == f"{m['error']}: run marked interrupted in {out / 'run_manifest.json'}", err


# A replay backend whose start() runs a slow __del__: the test signals while the finalizer runs. argv[1] is a marker
# file written when the finalizer begins; the rest is the harness command line.
FINALIZER_BACKEND = textwrap.dedent("""\
    import sys, time
    from pathlib import Path
    from mlperf_assets.harness import interrupts
    interrupts.install()  # what `python -m mlperf_assets.harness` does first
    from mlperf_assets.harness import backends
    from mlperf_assets.harness.backends.replay import ReplayBackend

    MARK = Path(sys.argv[1])

    class Finalized:
        def __del__(self):
            MARK.write_text("in __del__")
            time.sleep(1.0)  # the signal arrives here

    class SlowFinalizer(ReplayBackend):
        name = "replay"
        def start(self, dataset, streaming):
            super().start(dataset, streaming)
            Finalized()  # dropped at once: __del__ runs inside start()

    class SlowStop(ReplayBackend):
        name = "replay"
        def stop(self):
            MARK.write_text("stopping")
            time.sleep(float(__import__("os").environ.get("SLOW_STOP_S", "3")))
            super().stop()

    sys.modules[__name__].SlowFinalizer = SlowFinalizer
    sys.modules[__name__].SlowStop = SlowStop
    backends.BACKENDS["replay"] = __import__("dataclasses").replace(
        backends.BACKENDS["replay"], target=__name__ + ":" + __import__("os").environ["TEST_BACKEND"])
    from mlperf_assets.harness.cli import main
    sys.exit(main(sys.argv[2:]))
    """)


def _start_wrapped(backend: str, mark: Path, args: list[str], env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", FINALIZER_BACKEND, str(mark), "run", *args], cwd=PROJECT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "TEST_BACKEND": backend, **(env or {})})


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if path.exists():
            return
        if proc.poll() is not None:
            raise AssertionError(f"the harness ended ({proc.returncode}) before {path} appeared: {proc.stderr.read()}")
        time.sleep(0.01)
    raise AssertionError(f"{path} never appeared")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_inside_a_finalizer_during_backend_start(tmp_path: Path, dataset: Path, sig: int):
    out, mark = tmp_path / "run", tmp_path / "mark"
    # A short run: if the signal were lost, it would complete within a second.
    proc = _start_wrapped("SlowFinalizer", mark, ["--scenario", "Offline", "--mode", "performance", "--backend",
                                                  "replay", "--dataset", str(dataset), "--output-dir", str(out),
                                                  "--min-duration-ms", "200", "--min-query-count", "10"])
    try:
        _wait_for(mark, proc)
        time.sleep(0.2)  # well inside the 1 s finalizer
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    _assert_interrupted(out, proc.returncode, err, sig, "signal inside __del__")
    assert not (out / "mlperf_log_summary.txt").exists()  # LoadGen never started


WEAKREF_CALLBACK_SIGNAL = textwrap.dedent("""
    import os, signal, weakref
    from mlperf_assets.harness import interrupts

    interrupts.install()

    class Thing:
        pass

    def callback(ref, kind=os.environ["KIND"]):  # as importlib's module-lock callback during an import
        if kind == "signal":
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(10000):  # the handler runs here, between two bytecodes, inside the callback
                pass
        else:
            raise ValueError("a real bug in a callback")

    with interrupts.raising():
        thing = Thing()
        ref = weakref.ref(thing, callback)
        del thing  # the callback runs now; an exception raised in it is dropped by Python
        print("pending", interrupts.pending())
        try:
            interrupts.check()
        except interrupts.Interrupted as exc:
            print("checked", exc.exit_code)
""")


def test_signal_in_a_weakref_callback_is_kept_and_not_printed():
    """Seen once in the start-up sweep: SIGTERM landed in importlib's module-lock weakref callback, inside raising();
    Python dropped the handler's exception and printed it ("Exception ignored in ... Traceback"). The record is kept
    and the next check acts on it; nothing is printed. Other exceptions dropped in callbacks still are."""
    def run(kind: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", WEAKREF_CALLBACK_SIGNAL], cwd=PROJECT, capture_output=True,
                              text=True, timeout=60, env={**os.environ, "KIND": kind})

    signalled = run("signal")
    assert signalled.returncode == 0, signalled.stderr
    assert signalled.stdout.split() == ["pending", str(int(signal.SIGTERM)), "checked", "143"]
    assert _clean(signalled.stderr), signalled.stderr
    bug = run("bug")
    assert "Exception ignored" in bug.stderr and "ValueError: a real bug in a callback" in bug.stderr


@pytest.mark.slow
def test_signal_while_finishing_is_never_completed(tmp_path: Path, dataset: Path):
    """LoadGen has finished and the backend is stopping (slowly): the run is not declared completed."""
    out, mark = tmp_path / "run", tmp_path / "mark"
    proc = _start_wrapped("SlowStop", mark, ["--scenario", "Offline", "--mode", "performance", "--backend", "replay",
                                             "--dataset", str(dataset), "--output-dir", str(out),
                                             "--min-duration-ms", "200", "--min-query-count", "10"])
    try:
        _wait_for(mark, proc)
        proc.send_signal(signal.SIGTERM)
        t_sig = time.monotonic()
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    _assert_interrupted(out, proc.returncode, err, signal.SIGTERM, "signal while finishing")
    assert (out / "mlperf_log_summary.txt").stat().st_size > 0  # LoadGen had finished: its logs stay
    assert time.monotonic() - t_sig < 10


def test_second_signal_leaves_at_once(tmp_path: Path, dataset: Path):
    """First SIGTERM mid-run: the outcome is written, then the backend's stop hangs (60 s); a second SIGTERM ends the
    process at once, with the same code and manifest."""
    out, mark = tmp_path / "run", tmp_path / "mark"
    proc = _start_wrapped("SlowStop", mark, ["--scenario", "Server", "--mode", "performance", "--backend", "replay",
                                             "--dataset", str(dataset), "--output-dir", str(out), "--target-qps", "50",
                                             "--min-duration-ms", "600000", "--progress-interval-s", "0.1"],
                          env={"SLOW_STOP_S": "60"})
    try:
        _wait_for(out / "progress.jsonl", proc)
        proc.send_signal(signal.SIGTERM)
        _wait_for(mark, proc)  # the manifest is final before the backend is stopped
        assert _manifest(out)["exit_status"] == "interrupted"
        proc.send_signal(signal.SIGTERM)
        t_sig = time.monotonic()
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    _assert_interrupted(out, proc.returncode, err, signal.SIGTERM, "second signal")
    assert time.monotonic() - t_sig < 5


# Delays from 0 (the interpreter is still starting: no handler yet) to past LoadGen's start (about 1-2 s here).
SWEEP_DELAYS = [round(0.05 * i, 2) for i in range(0, 36)]  # 0.00 .. 1.75 s
SWEEP_SIGNALS = {signal.SIGTERM: SWEEP_DELAYS, signal.SIGINT: SWEEP_DELAYS[::3]}


@pytest.mark.slow
def test_signal_sweep_over_the_whole_start_up(tmp_path: Path, dataset: Path):
    trials = [(sig, delay, tmp_path / f"{sig.name}-{i}") for sig, delays in SWEEP_SIGNALS.items()
              for i, delay in enumerate(delays)]
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(
            lambda t: _trial(_harness("run", *SERVER_RUN, "--dataset", str(dataset), "--output-dir", str(t[2])),
                             t[1], t[0]), trials))
    wall = time.monotonic() - started
    before_handlers = []
    problems = []
    for (sig, delay, out), (rc, err, exit_s) in zip(trials, results):
        what = f"{sig.name} after {delay:.2f} s"
        if rc == -sig or (sig == signal.SIGINT and rc == 1 and "Fatal Python error: init_import_site" in err):
            # Python's own start-up, before __main__ installed the handlers: killed by the default disposition (a
            # shell reads 143 / 130), or, for SIGINT while `site` is imported, Python's fatal start-up error (exit 1).
            # Nothing has been written yet. (A launcher that blocks the signals closes this window: the next test.)
            before_handlers.append(f"{what} (rc {rc})")
            if out.exists():
                problems.append(f"{what}: killed by the signal after the run folder was created")
            continue
        try:
            _assert_interrupted(out, rc, err, sig, what)
        except AssertionError as exc:
            problems.append(str(exc))
        if exit_s > 15:
            problems.append(f"{what}: exited {exit_s:.1f} s after the signal")
    slowest = max(exit_s for _, _, exit_s in results)
    print(f"{len(trials)} trials in {wall:.1f} s, slowest exit {slowest:.2f} s after its signal; killed before the "
          f"handlers existed: {before_handlers or 'none'}")
    assert not problems, "\n".join(problems)
    # Python's start-up takes 50 ms idle but up to ~0.5 s on a loaded machine: still, most trials reach the handlers
    assert len(before_handlers) <= len(trials) // 2


def _block_signals() -> None:  # in the child, between fork and exec: the mask survives exec
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_during_interpreter_start_up_is_kept_when_the_launcher_blocks_it(tmp_path: Path, dataset: Path,
                                                                                  sig: int):
    """Before ``__main__`` runs no handler exists; a launcher that starts the harness with the signals blocked keeps
    a signal pending until ``interrupts.install`` unblocks it. Sent right after exec (delay 0): 130 / 143 and the
    manifest ``interrupted``, never killed (-N) with nothing written."""
    for i, delay in enumerate((0.0, 0.02, 0.1)):
        out = tmp_path / f"run{i}"
        proc = subprocess.Popen(_harness("run", *SERVER_RUN, "--dataset", str(dataset), "--output-dir", str(out)),
                                cwd=PROJECT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                preexec_fn=_block_signals)
        try:
            time.sleep(delay)
            proc.send_signal(sig)
            _, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
        _assert_interrupted(out, proc.returncode, err, sig, f"{sig.name} {delay} s after exec, signals blocked")


@pytest.mark.slow
def test_prepare_dataset_signal_writes_nothing(tmp_path: Path, stories_dir: Path):
    big = tmp_path / "big.jsonl"
    texts = [p.read_text() for p in sorted(stories_dir.glob("*.story"))]
    with big.open("w") as fh:
        for i in range(2000):  # a few seconds of preparation
            body = texts[i % len(texts)]
            fh.write(json.dumps({"id": str(i), "article": body.split("@highlight")[0],
                                 "highlights": "A summary ."}) + "\n")
    outcomes = []
    for i, delay in enumerate([0.3, 0.6, 1.0, 1.5]):
        out = tmp_path / f"p{i}" / "prepared.json"
        out.parent.mkdir()
        rc, err, _ = _trial(_harness("prepare-dataset", "--source", "jsonl", "--path", str(big), "--out", str(out)),
                            delay, signal.SIGTERM)
        left = sorted(p.name for p in out.parent.iterdir())
        assert _clean(err), err
        if rc == 0:
            assert left == ["prepared.json"] and len(json.loads(out.read_text())) == 2000
        elif rc == -signal.SIGTERM:
            assert left == []  # before the handlers: nothing written
        else:
            assert rc == 143, err
            assert left == [], f"SIGTERM after {delay} s left {left}"
            assert err.strip().splitlines()[-1] == "terminated (SIGTERM): stopped; nothing written"
        outcomes.append(rc)
    print("prepare-dataset outcomes by delay:", outcomes)
    assert outcomes.count(143) >= 2  # signals that landed during the preparation
