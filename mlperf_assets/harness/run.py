"""One LoadGen test in this process: clean run folder, user.conf, backend, SUT/QSL, progress, manifest.

LoadGen's ``StartTest`` blocks in C++ for the whole test, so it runs in a helper thread while the main thread waits in
short slices: Ctrl-C (SIGINT) and SIGTERM then reach Python at once, and so does a backend failure. LoadGen cannot
be stopped mid-test, so on either the harness writes the final progress line and the manifest ("interrupted" or
"failed"), releases the backend and leaves with ``os._exit``.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
import threading
import time
import uuid
from pathlib import Path

from .args import RunArgs
from .backends import backend_class
from .benchmarks import BENCHMARKS
from .dataset import PreparedDataset, load_prepared
from .errors import HarnessError
from .files import sha256_file
from .manifest import RunManifest
from .progress import PROGRESS_FILE, SAMPLES_FILE, ProgressWriter
from .settings import (
    RunSettings,
    build_user_conf,
    check_lg_model_name,
    default_lg_model_name,
    effective_settings,
    load_test_settings,
)
from .sut import HarnessQSL, HarnessSUT

log = logging.getLogger("mlperf_assets.harness")

LOADGEN_FILES = ("mlperf_log_summary.txt", "mlperf_log_detail.txt", "mlperf_log_accuracy.json", "mlperf_log_trace.json")
RUN_FILES = (*LOADGEN_FILES, "user.conf", PROGRESS_FILE, SAMPLES_FILE, "run_manifest.json", "harness.log")
EXIT_OK, EXIT_FAILED, EXIT_SIGINT, EXIT_SIGTERM = 0, 1, 130, 143


class _Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C."""


class _BackendFailed(Exception):
    pass


def prepare_output_dir(out: Path, overwrite: bool) -> None:
    out.mkdir(parents=True, exist_ok=True)
    if (out / "audit.config").exists():
        raise HarnessError(f"{out / 'audit.config'} exists: LoadGen would silently apply it (compliance overrides); "
                           "remove it or use another --output-dir")
    present = [f for f in RUN_FILES if (out / f).exists()]
    if present and not overwrite:
        raise HarnessError(f"{out} already holds a run ({', '.join(present)}): use a new --output-dir or --overwrite")
    for f in present:
        (out / f).unlink()


def resolve_benchmark(dataset: PreparedDataset, wanted: str | None) -> str:
    if wanted is None or wanted == dataset.benchmark:
        return dataset.benchmark
    if BENCHMARKS[wanted].prompt_format != BENCHMARKS[dataset.benchmark].prompt_format:
        raise HarnessError(f"--benchmark {wanted} does not match the dataset's prompts ({dataset.benchmark}): "
                           "prepare the dataset for that benchmark")
    dataset.benchmark = wanted  # benchmarks with one prompt format share a prepared file
    return wanted


def _setup_logging(out: Path) -> logging.Handler:
    handler = logging.FileHandler(out / "harness.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    return handler


def _install_signal_handlers() -> None:
    if threading.current_thread() is not threading.main_thread():
        return

    def on_term(signum, frame):  # noqa: ARG001
        raise _Terminated()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def run(args: RunArgs) -> int:
    """Run one LoadGen test; returns the exit code (or leaves with ``os._exit`` if LoadGen is still running)."""
    out = Path(args.output_dir).resolve()
    dataset_path = Path(args.dataset).resolve()
    user_conf_src = Path(args.user_conf).resolve() if args.user_conf else None

    # Everything that can be wrong with the input is checked before anything is written.
    dataset = load_prepared(dataset_path).head(args.max_samples)
    benchmark = resolve_benchmark(dataset, args.benchmark)
    lg_name = check_lg_model_name(args.lg_model_name or default_lg_model_name(benchmark), benchmark)
    settings = RunSettings(lg_name, args.scenario, args.mode, args.settings)
    user_conf = build_user_conf(settings, len(dataset), user_conf_src)
    cls = backend_class(args.backend)
    backend = cls.from_args(args.backend_args)

    prepare_output_dir(out, args.overwrite)
    (out / "user.conf").write_text(user_conf.text, encoding="utf-8")
    handler = _setup_logging(out)
    manifest = RunManifest.begin(
        out,
        run_id=args.run_id or str(uuid.uuid4()),
        node=args.node or os.uname().nodename,
        benchmark=benchmark,
        lg_model_name=lg_name,
        scenario=args.scenario,
        mode=args.mode,
        backend={"name": cls.name, "kind": cls.kind, "versions": {},
                 "engine_args": dict(args.backend_args.engine_args), "token_ids": None},
        dataset={"path": str(dataset_path), "sha256": sha256_file(dataset_path), "samples": len(dataset),
                 "tokenizer": dataset.tokenizer_name, "tokenizer_kind": dataset.tokenizer_kind,
                 "source": dataset.source},
        requested_settings=settings.requested(),
        performance_sample_count=user_conf.performance_sample_count,
        performance_sample_count_note=user_conf.performance_sample_count_note,
    )
    log.info("run %s: %s %s %s backend=%s samples=%d -> %s", manifest.data["run_id"], lg_name, args.scenario,
             args.mode, args.backend, len(dataset), out)
    if user_conf.performance_sample_count_note:
        log.warning(user_conf.performance_sample_count_note)

    _install_signal_handlers()
    state = _RunState(manifest, backend)
    try:
        return _run_loadgen(args, out, dataset, settings, backend, manifest, state)
    except KeyboardInterrupt as exc:
        code = EXIT_SIGTERM if isinstance(exc, _Terminated) else EXIT_SIGINT
        return state.abort("interrupted", "terminated (SIGTERM)" if code == EXIT_SIGTERM else "interrupted (Ctrl-C)", code)
    except _BackendFailed as exc:
        return state.abort("failed", str(exc), EXIT_FAILED)
    except HarnessError as exc:
        return state.abort("failed", str(exc), EXIT_FAILED if state.loadgen_started else 2, user_error=True)
    except Exception as exc:  # noqa: BLE001 - recorded, then reported as a failed run
        log.exception("harness failed")
        return state.abort("failed", f"{type(exc).__name__}: {exc}", EXIT_FAILED)
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()


class _RunState:
    """What must be finished off if the run ends early."""

    def __init__(self, manifest: RunManifest, backend) -> None:
        self.manifest = manifest
        self.backend = backend
        self.progress: ProgressWriter | None = None
        self.loadgen_started = False
        self.loadgen_running: threading.Event | None = None  # set when StartTest has returned

    def abort(self, status: str, error: str, code: int, user_error: bool = False) -> int:
        log.error("run %s: %s", status, error)
        if self.progress is not None:
            try:
                self.progress.stop()
            except Exception:  # noqa: BLE001
                log.exception("could not write the final progress line")
        self.manifest.finish(status, error)
        _stop_backend(self.backend)
        if user_error and not self.loadgen_started:
            raise HarnessError(error)
        if self.loadgen_running is not None and not self.loadgen_running.is_set():
            # LoadGen cannot be stopped mid-test: leave now; everything of ours is on disk.
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        return code


def _stop_backend(backend, timeout_s: float = 30.0) -> None:
    t = threading.Thread(target=_safe_stop, args=(backend,), name="backend-stop", daemon=True)
    t.start()
    t.join(timeout_s)
    if t.is_alive():
        log.warning("backend.stop() did not return within %.0f s", timeout_s)


def _safe_stop(backend) -> None:
    try:
        backend.stop()
    except Exception:  # noqa: BLE001
        log.exception("backend.stop() failed")


def _record_provenance(manifest: RunManifest, backend) -> None:
    """The backend's versions, engine arguments, token-id origin and anything else it reports."""
    try:
        prov = dict(backend.provenance() or {})
    except Exception:  # noqa: BLE001 - provenance must never fail a run
        log.exception("backend.provenance() failed")
        return
    prov.pop("backend", None)
    entry = manifest.data["backend"]
    entry.update({k: v for k, v in prov.items() if k not in ("name", "kind")})


def _run_loadgen(args: RunArgs, out: Path, dataset: PreparedDataset, settings: RunSettings, backend,
                 manifest: RunManifest, state: _RunState) -> int:
    import mlperf_loadgen as lg

    streaming = args.scenario != "Offline"
    t_load = time.monotonic()
    backend.start(dataset, streaming)
    log.info("backend %s ready in %.1f s", backend.name, time.monotonic() - t_load)
    _record_provenance(manifest, backend)

    os.chdir(out)  # LoadGen reads audit.config from the working directory: only this clean folder
    ts = load_test_settings(out / "user.conf", settings)
    psc = int(ts.performance_sample_count_override)
    if psc <= 0 or psc > len(dataset):
        note = manifest.data.get("performance_sample_count_note") or (
            f"performance_sample_count set to the dataset size {len(dataset)} (LoadGen had {psc})")
        psc = len(dataset)
        ts.performance_sample_count_override = psc
        manifest.update(performance_sample_count_note=note)
    manifest.update(settings=effective_settings(ts), performance_sample_count=psc)
    manifest.write()

    log_settings = lg.LogSettings()
    log_settings.log_output.outdir = str(out)
    log_settings.log_output.copy_summary_to_stdout = False
    log_settings.enable_trace = False

    # The dataset's token lists are millions of objects: a full garbage collection walking them mid-test would stall
    # LoadGen's callbacks for tens of ms. Freeze everything alive now out of the collector's reach.
    gc.collect()
    gc.freeze()
    t0 = time.monotonic_ns()
    sut = HarnessSUT(backend, dataset, args.scenario, t0_ns=t0, batch_size=args.batch_size,
                     workers=args.offline_workers, total=len(dataset) if args.mode == "accuracy" else None)
    qsl = HarnessQSL(len(dataset), psc)
    sut_handle = sut.construct()
    progress = ProgressWriter(out, sut, t0_ns=t0, interval_s=args.progress_interval_s,
                              label=f"{args.scenario} {args.mode}")
    state.progress = progress
    failure: list[BaseException] = []

    finished = threading.Event()

    def start_test() -> None:
        try:
            lg.StartTestWithLogSettings(sut_handle, qsl.handle, ts, log_settings)
        except BaseException as exc:  # noqa: BLE001
            failure.append(exc)
        finally:
            finished.set()

    thread = threading.Thread(target=start_test, name="loadgen", daemon=True)
    state.loadgen_running = finished
    state.loadgen_started = True
    progress.start()
    thread.start()
    # Wait on an Event, not Thread.join: a Ctrl-C inside join() marks the thread stopped in Python 3.11.
    while not finished.wait(0.1):
        if sut.failed.is_set():
            raise _BackendFailed(f"backend {backend.name} failed: {type(sut.error).__name__}: {sut.error}")
    if failure:
        raise failure[0]
    if sut.failed.is_set():
        raise _BackendFailed(f"backend {backend.name} failed: {type(sut.error).__name__}: {sut.error}")

    thread.join()
    state.loadgen_running = None
    trace = out / "mlperf_log_trace.json"
    if trace.exists() and trace.stat().st_size == 0:  # LoadGen opens it even with tracing off
        trace.unlink()
    snap = progress.stop()
    state.progress = None
    sut.destroy()
    qsl.destroy()
    _record_provenance(manifest, backend)  # some facts (e.g. exact or re-tokenized ids) are known only now
    _stop_backend(backend)
    if sut.duplicates:
        log.warning("backend reported %d duplicate first-token/completion callbacks (ignored)", sut.duplicates)
    manifest.finish("completed", None, completed_samples=snap["completed"] if snap else None,
                    output_tokens=snap["output_tokens"] if snap else None)
    log.info("LoadGen finished: %s samples, %s output tokens", snap and snap["completed"], snap and snap["output_tokens"])
    return EXIT_OK
