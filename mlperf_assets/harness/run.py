"""One LoadGen test in this process: clean run folder, user.conf, backend, SUT/QSL, progress, manifest.

LoadGen's ``StartTest`` blocks in C++ for the whole test, so it runs in a helper thread while the main thread waits in
short slices, checking for a signal (SIGINT / SIGTERM, recorded by ``interrupts``), a backend failure and a file that
could not be written (disk full). LoadGen cannot be stopped mid-test, so on any of them the harness writes the final
progress line and the manifest ("interrupted" or "failed"), releases the backend and leaves with ``os._exit``.

Signals are never lost (``interrupts``): they are checked once the run folder and manifest exist, after the backend
started (during its ``start`` they also interrupt at once), while LoadGen runs, and just before the run is declared
``completed``; exit 130 (SIGINT) or 143 (SIGTERM) with the manifest ``interrupted``.

A full disk (or any write error) never ends in a traceback: the progress thread stops and the run fails, LoadGen logs
cut short fail the run, harness.log errors are kept rather than printed; one line ``error: no space left on device
writing FILE`` and exit 1; the manifest's final record reaches the disk through a reserve (``manifest.py``).

Telemetry (``telemetry.py``, ``--telemetry-interval-s``) samples from before ``backend.start()`` until LoadGen has
finished, marking LoadGen's window; it is stopped on every way out and its summary goes into the manifest. It is
auxiliary: a telemetry write that fails logs one warning and never fails the run.
"""

from __future__ import annotations

import errno
import gc
import logging
import os
import signal
import sys
import threading
import time
import uuid
from pathlib import Path

from . import interrupts
from .args import RunArgs
from .backends import backend_class, build_backend
from .benchmarks import BENCHMARKS
from .compliance import AuditConfig, ComplianceTest, check_runnable, compliance_test
from .compliance import default_eos_token_id, parse_audit_config, read_audit_config
from .dataset import PreparedDataset, load_prepared
from .errors import NO_SPACE, HarnessError, OutputError, output_error_text, say
from .files import sha256_file
from .interrupts import Interrupted
from .manifest import RunManifest
from .progress import ProgressWriter
from .run_folder import ACCURACY_LOG, DETAIL_LOG, HARNESS_LOG, HARNESS_OUTPUTS, SUMMARY_LOG, TRACE_LOG, USER_CONF
from .settings import (
    RunSettings,
    audit_schedule_overrides,
    build_user_conf,
    check_lg_model_name,
    default_lg_model_name,
    effective_settings,
    load_test_settings,
)
from .sut import HarnessQSL, HarnessSUT
from .telemetry import TelemetrySampler, engine_kv_reader

log = logging.getLogger("mlperf_assets.harness")

EXIT_OK, EXIT_FAILED = 0, 1
EXIT_SIGINT, EXIT_SIGTERM = interrupts.EXIT_SIGINT, interrupts.EXIT_SIGTERM
# How each LoadGen log ends when LoadGen wrote all of it (its C++ streams fail silently on a full disk): the summary's
# last line is "No errors encountered during test." or "N ERRORS encountered. See detailed log."
LOG_ENDINGS = {SUMMARY_LOG: b"encountered", DETAIL_LOG: b"}", ACCURACY_LOG: b"]"}


class _BackendFailed(Exception):
    pass


def prepare_output_dir(out: Path, overwrite: bool, compliance: bool = False) -> Path | None:
    """Create ``out`` (a clean run folder); returns the topmost folder it created, if any. Unusable paths (a file, a
    folder under a file, one that cannot be created or written) are bad input: :class:`HarnessError`."""
    for parent in (out, *out.parents):
        if parent.exists():
            if not parent.is_dir():
                where = "is a file" if parent == out else f"is under {parent}, which is a file"
                raise HarnessError(f"--output-dir {out} {where}, not a folder")
            break
    top = None
    for parent in (out, *out.parents):
        if parent.exists() or parent.is_symlink():
            break
        top = parent
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HarnessError(f"--output-dir {out} cannot be created ({exc.strerror or exc})") from None
    if (out / "audit.config").exists() and compliance and overwrite:  # a killed compliance run's: ours replaces it
        try:
            (out / "audit.config").unlink()
        except OSError as exc:
            raise HarnessError(f"--output-dir {out}: cannot remove the earlier audit.config ({exc.strerror or exc})") \
                from None
    if (out / "audit.config").exists():
        raise HarnessError(f"{out / 'audit.config'} exists: LoadGen would silently apply it (compliance overrides); "
                           "remove it or use another --output-dir")
    present = [f for f in HARNESS_OUTPUTS if (out / f).exists()]
    if present and not overwrite:
        raise HarnessError(f"{out} already holds a run ({', '.join(present)}): use a new --output-dir or --overwrite")
    for f in present:
        try:
            (out / f).unlink()
        except OSError as exc:
            raise HarnessError(f"--output-dir {out}: cannot remove the earlier {f} ({exc.strerror or exc})") from None
    return top


def _write_run_file(path: Path, text: str) -> None:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        if exc.errno in (*NO_SPACE, errno.EIO):
            raise OutputError(path, exc) from None
        raise HarnessError(f"--output-dir {path.parent} is not writable ({exc.strerror or exc})") from None


def _remove_partial(out: Path, top: Path | None, files: tuple[str, ...]) -> None:
    """Undo a run folder that never got its manifest: the files written so far, and the folders created for it."""
    for f in files:
        try:
            (out / f).unlink(missing_ok=True)
        except OSError:
            pass
    if top is None:
        return
    for folder in (out, *out.parents):
        try:
            folder.rmdir()  # only if empty
        except OSError:
            return
        if folder == top:
            return


def resolve_benchmark(dataset: PreparedDataset, wanted: str | None) -> str:
    if wanted is None or wanted == dataset.benchmark:
        return dataset.benchmark
    if BENCHMARKS[wanted].prompt_format != BENCHMARKS[dataset.benchmark].prompt_format:
        raise HarnessError(f"--benchmark {wanted} does not match the dataset's prompts ({dataset.benchmark}): "
                           "prepare the dataset for that benchmark")
    dataset.benchmark = wanted  # benchmarks with one prompt format share a prepared file
    return wanted


class _RunLogHandler(logging.FileHandler):
    """harness.log. A record that cannot be written (disk full) is dropped without printing logging's traceback; the
    first such error is kept and fails the run."""

    error: OutputError | None = None

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):
            if self.error is None:
                self.error = OutputError(self.baseFilename, exc)
            return
        super().handleError(record)

    def close(self) -> None:
        try:
            super().close()
        except OSError as exc:  # the final flush
            if self.error is None:
                self.error = OutputError(self.baseFilename, exc)


def _setup_logging(out: Path) -> _RunLogHandler:
    try:
        handler = _RunLogHandler(out / HARNESS_LOG, encoding="utf-8")
    except OSError as exc:
        raise OutputError(out / HARNESS_LOG, exc) from None
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    return handler


def run(args: RunArgs) -> int:
    """Run one LoadGen test; returns the exit code (or leaves with ``os._exit`` if LoadGen is still running or the run
    was interrupted). Bad input raises :class:`HarnessError` before anything is written."""
    interrupts.install()  # already done by __main__ (first thing) and cli.main; here for other entry points
    out = Path(args.output_dir).resolve()
    dataset_path = Path(args.dataset).resolve()
    user_conf_src = Path(args.user_conf).resolve() if args.user_conf else None

    # Everything that can be wrong with the input is checked before anything is written.
    dataset = load_prepared(dataset_path).head(args.max_samples)
    benchmark = resolve_benchmark(dataset, args.benchmark)
    lg_name = check_lg_model_name(args.lg_model_name or default_lg_model_name(benchmark), benchmark)
    settings = RunSettings(lg_name, args.scenario, args.mode, args.settings)
    compliance = _compliance_input(args, lg_name)
    audit = (audit_schedule_overrides(parse_audit_config(compliance[1], "audit.config"), lg_name, args.scenario)
             if compliance is not None else None)
    user_conf = build_user_conf(settings, len(dataset), user_conf_src, audit)
    cls = backend_class(args.backend)
    backend = build_backend(args.backend, args.backend_args, args.data_parallel_size)

    top = prepare_output_dir(out, args.overwrite, compliance is not None)
    handler: _RunLogHandler | None = None
    try:
        _write_run_file(out / USER_CONF, user_conf.text)
        handler = _setup_logging(out)
        manifest = _begin_manifest(args, out, cls, benchmark, lg_name, dataset, dataset_path, settings, user_conf,
                                   compliance)
    except BaseException:
        if handler is not None:
            logging.getLogger().removeHandler(handler)
            handler.close()
        _remove_partial(out, top, (USER_CONF, HARNESS_LOG))
        raise
    log.info("run %s: %s %s %s backend=%s samples=%d -> %s", manifest.data["run_id"], lg_name, args.scenario,
             args.mode, args.backend, len(dataset), out)
    if user_conf.performance_sample_count_note:
        log.warning(user_conf.performance_sample_count_note)

    state = _RunState(out, manifest, backend, handler)
    if compliance is not None:
        state.audit = AuditConfig(out, compliance[1])
    try:
        interrupts.check()  # a signal while the inputs were read: the run folder now says "interrupted"
        return _run_loadgen(args, out, dataset, settings, backend, manifest, state)
    except KeyboardInterrupt as exc:  # Interrupted, or a library's own KeyboardInterrupt (Ctrl-C)
        signum = exc.signum if isinstance(exc, Interrupted) else (interrupts.pending() or signal.SIGINT)
        return state.abort("interrupted", interrupts.describe(signum), interrupts.exit_code_for(signum))
    except _BackendFailed as exc:
        return state.abort("failed", str(exc), EXIT_FAILED)
    except HarnessError as exc:  # bad input found late (exit 2 before LoadGen started), or OutputError (exit 1)
        return state.abort("failed", str(exc), exc.exit_code if not state.loadgen_started else EXIT_FAILED)
    except OSError as exc:  # an OS error of ours not turned into an OutputError where it happened
        log.exception("harness failed")
        where = exc.filename or out
        return state.abort("failed", output_error_text(where, exc), EXIT_FAILED)
    except Exception as exc:  # noqa: BLE001 - recorded, then reported as a failed run
        log.exception("harness failed")
        return state.abort("failed", f"{type(exc).__name__}: {exc}", EXIT_FAILED)
    finally:
        if state.audit is not None:
            state.audit.remove()
        logging.getLogger().removeHandler(handler)
        handler.close()


def _compliance_input(args: RunArgs, lg_name: str) -> tuple[ComplianceTest, str] | None:
    """The compliance test and its audit.config text, checked (bad input: HarnessError before anything is written)."""
    if args.compliance is None:
        if args.audit_config is not None or args.audit_config_text is not None:
            raise HarnessError("--audit-config / --audit-config-text need --compliance TEST (the test they belong to)")
        return None
    test = compliance_test(args.compliance)
    check_runnable(test, lg_name, args.mode)
    if args.audit_config is not None:
        text = read_audit_config(args.audit_config, test)
    elif args.audit_config_text is not None:
        text = args.audit_config_text
        parse_audit_config(text, "--audit-config-text", test)
    else:
        raise HarnessError(f"--compliance {test.name} needs --audit-config FILE ({test.audit_config_path} of your "
                           "MLCommons inference checkout) or --audit-config-text TEXT")
    return test, text


def _begin_manifest(args: RunArgs, out: Path, cls, benchmark: str, lg_name: str, dataset: PreparedDataset,
                    dataset_path: Path, settings: RunSettings, user_conf,
                    compliance: tuple[ComplianceTest, str] | None) -> RunManifest:
    record = None
    if compliance is not None:
        import hashlib

        test, text = compliance
        record = {"test": test.name, "audit_config": text,
                  "audit_config_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
                  "audit_settings": parse_audit_config(text, "audit.config"),
                  "source": str(Path(args.audit_config).resolve()) if args.audit_config else "--audit-config-text",
                  "eos_token_id": default_eos_token_id(benchmark, dataset.tokenizer_kind, dataset.tokenizer_name),
                  "verification": None}
    return RunManifest.begin(
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
        compliance=record,
    )


class _RunState:
    """What must be finished off if the run ends early."""

    def __init__(self, out: Path, manifest: RunManifest, backend, log_handler: _RunLogHandler) -> None:
        self.out = out
        self.manifest = manifest
        self.backend = backend
        self.log_handler = log_handler
        self._stopper: threading.Thread | None = None
        self.progress: ProgressWriter | None = None
        self.telemetry: TelemetrySampler | None = None
        self.loadgen_started = False
        self.loadgen_running: threading.Event | None = None  # set when StartTest has returned
        self.audit: AuditConfig | None = None  # a compliance run's audit.config, removed once LoadGen has read it

    def abort(self, status: str, error: str, code: int) -> int:
        """Record the outcome, say it in one line on stderr, release the backend; leave with ``os._exit`` if LoadGen
        is still running or the run was interrupted (nothing of the run is left to wait for)."""
        interrupts.stop_raising()
        if self.audit is not None:
            self.audit.remove()
        log.error("run %s: %s", status, error)
        if self.progress is not None:
            try:
                self.progress.stop()
            except OutputError as exc:  # the outcome's own cause is what is reported
                log.error("could not write the final progress line: %s", exc)
            except Exception:  # noqa: BLE001
                log.exception("could not write the final progress line")
        self.stop_telemetry()
        line = f"{error}: run marked interrupted in {self.manifest.path}" if status == "interrupted" else f"error: {error}"
        try:
            self.manifest.finish(status, error)
        except OutputError as exc:
            log.error("%s", exc)
            line += f" (and {exc}: it may still say 'running')"
        interrupts.leave_on_signal(code)  # the outcome is written: a second signal need not wait for the backend
        say(line)
        _drop_empty_trace(self.out)
        self.stop_backend()
        if status == "interrupted" or (self.loadgen_running is not None and not self.loadgen_running.is_set()):
            # LoadGen cannot be stopped mid-test: leave now; everything of ours is on disk.
            interrupts.leave(code)
        return code

    def stop_telemetry(self) -> None:
        """Stop the sampler (its file closed, complete) and put its record in the manifest (idempotent)."""
        if self.telemetry is None:
            return
        try:
            self.manifest.update(telemetry=self.telemetry.stop())
        except Exception:  # noqa: BLE001 - telemetry never fails a run
            log.exception("telemetry: could not stop the sampler")

    def stop_backend(self, timeout_s: float = 30.0, interruptible: bool = False) -> None:
        """``backend.stop()`` once, on a helper thread, waited for at most ``timeout_s`` (or until a signal, if
        ``interruptible``; a later call waits for the same stop)."""
        if self._stopper is None:
            self._stopper = threading.Thread(target=_safe_stop, args=(self.backend,), name="backend-stop", daemon=True)
            self._stopper.start()
        t = self._stopper
        end = time.monotonic() + timeout_s
        while t.is_alive() and time.monotonic() < end:
            if interruptible and interrupts.pending() is not None:
                return
            t.join(0.1)
        if t.is_alive():
            log.warning("backend.stop() did not return within %.0f s", timeout_s)


def _drop_empty_trace(out: Path) -> None:
    trace = out / TRACE_LOG
    try:
        if trace.exists() and trace.stat().st_size == 0:  # LoadGen opens it even with tracing off
            trace.unlink()
    except OSError:
        pass


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
    if args.telemetry_interval_s > 0:  # started before the engine, so its load shows in telemetry.jsonl
        state.telemetry = TelemetrySampler(out, backend, args.telemetry_interval_s)
        state.telemetry.start()
    else:
        manifest.update(telemetry={"enabled": False})
    telemetry = state.telemetry
    t_load = time.monotonic()
    with interrupts.raising():  # a model may load for minutes: a signal interrupts it at once
        backend.start(dataset, streaming)
    if interrupts.reclaim():
        log.warning("backend %s replaced the SIGINT/SIGTERM handlers; the harness's are restored", backend.name)
    interrupts.check()  # the record, if the raise was dropped by a finalizer inside start()
    log.info("backend %s ready in %.1f s", backend.name, time.monotonic() - t_load)
    _record_provenance(manifest, backend)

    os.chdir(out)  # LoadGen reads audit.config from the working directory: only this clean folder
    audit_schedule = (audit_schedule_overrides(parse_audit_config(state.audit.text, "audit.config"),
                                               settings.lg_model_name, settings.scenario)
                      if state.audit is not None else None)
    ts = load_test_settings(out / USER_CONF, settings, audit_schedule)
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
    kv_source = (lambda: telemetry.kv_cache_usage_pct) if telemetry is not None else engine_kv_reader(backend)
    progress = ProgressWriter(out, sut, t0_ns=t0, interval_s=args.progress_interval_s,
                              label=f"{args.scenario} {args.mode}", kv_source=kv_source)
    state.progress = progress
    failure: list[BaseException] = []

    finished = threading.Event()

    audit = state.audit
    if audit is not None:
        audit.place()  # in the working directory (out), where StartTest looks for it
        log.info("compliance test %s: %s placed for LoadGen", manifest.data["compliance"]["test"], audit.path)

    def start_test() -> None:
        try:
            if telemetry is not None:
                telemetry.mark("test_start")
            lg.StartTestWithLogSettings(sut_handle, qsl.handle, ts, log_settings)
        except BaseException as exc:  # noqa: BLE001
            failure.append(exc)
        finally:
            if telemetry is not None:
                telemetry.mark("test_end")
            if audit is not None:
                audit.remove()
            finished.set()

    thread = threading.Thread(target=start_test, name="loadgen", daemon=True)
    state.loadgen_running = finished
    state.loadgen_started = True
    progress.start()
    thread.start()
    # Wait on an Event, not Thread.join: a Ctrl-C inside join() marks the thread stopped in Python 3.11.
    while not finished.wait(0.1):
        _check_run(sut, backend, progress, state)
    if failure:
        raise failure[0]
    _check_run(sut, backend, progress, state)

    thread.join()
    state.loadgen_running = None
    _drop_empty_trace(out)
    snap = progress.stop()
    state.progress = None
    state.stop_telemetry()
    sut.destroy()
    qsl.destroy()
    check_loadgen_logs(out)
    _record_provenance(manifest, backend)  # some facts (e.g. exact or re-tokenized ids) are known only now
    state.stop_backend(interruptible=True)
    if sut.duplicates:
        log.warning("backend reported %d duplicate first-token/completion callbacks (ignored)", sut.duplicates)
    log.info("LoadGen finished: %s samples, %s output tokens", snap and snap["completed"], snap and snap["output_tokens"])
    if state.log_handler.error is not None:
        raise state.log_handler.error
    if state.audit is not None:
        _verify_compliance(out, manifest, args.scenario)
    interrupts.check()  # the last safe point: a signal before it makes the run "interrupted", never "completed"
    manifest.finish("completed", None, completed_samples=snap["completed"] if snap else None,
                    output_tokens=snap["output_tokens"] if snap else None)
    interrupts.leave_on_signal(EXIT_OK)
    return EXIT_OK


def _verify_compliance(out: Path, manifest: RunManifest, scenario: str) -> None:
    """LoadGen must have applied the audit.config (its detail log says so); then the test's own verification writes
    verify_accuracy.txt. A failed verification is recorded, not a failed run: LoadGen finished."""
    from .compliance import verify

    record = manifest.data["compliance"]
    detail = (out / DETAIL_LOG).read_text(encoding="utf-8", errors="replace")
    if "audit.config" not in detail and "Audit Config" not in detail:
        raise HarnessError(f"{out / DETAIL_LOG}: LoadGen does not say it read audit.config; the "
                           f"{record['test']} run did not apply it")
    result = verify(out, scenario, manifest.data["benchmark"], test=record["test"],
                    eos_token_id=record["eos_token_id"])
    record["verification"] = result.to_dict()
    (log.info if result.passed else log.warning)("compliance test %s verification: %s (%s)", record["test"],
                                                 "pass" if result.passed else "FAIL", result.checks)


def _check_run(sut: HarnessSUT, backend, progress: ProgressWriter, state: _RunState) -> None:
    """One look, while LoadGen runs, at everything that ends the run early."""
    interrupts.check()
    if state.audit is not None and sut.issued:  # LoadGen read its settings before issuing the first query
        state.audit.remove()
    if sut.failed.is_set():
        raise _BackendFailed(f"backend {backend.name} failed: {type(sut.error).__name__}: {sut.error}")
    if progress.error is not None:
        raise progress.error
    if state.log_handler.error is not None:
        raise state.log_handler.error


def check_loadgen_logs(out: Path) -> None:
    """LoadGen writes its logs through C++ streams that fail silently: a log that does not end as LoadGen ends it was
    cut short (a full disk, most likely) and fails the run."""
    for name, ending in LOG_ENDINGS.items():
        path = out / name
        try:
            size = path.stat().st_size
            with open(path, "rb") as fh:
                fh.seek(max(0, size - 256))
                tail = fh.read().rstrip()
        except OSError:
            size, tail = 0, b""
        complete = ending in tail.rsplit(b"\n", 1)[-1] if name == SUMMARY_LOG else tail.endswith(ending)
        if complete:
            continue
        if _disk_full(out):
            raise OutputError(path, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
        raise OutputError(path, OSError(errno.EIO, f"LoadGen's log is incomplete ({size} bytes, cut short)"))


def _disk_full(folder: Path, slack_bytes: int = 1 << 20) -> bool:
    try:
        st = os.statvfs(folder)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < slack_bytes
