"""One MLPerf Endpoints point on the node: MLCommons' reference client, unmodified, inside the run-folder protocol.

The orchestrator plans the point (``endpoints/plan.py``) and writes its job (``endpoints/client.py``): the point
manifest, the client's YAML for the performance run and, at an accuracy point, for the accuracy run, the client's
command, and the server (an external URL, or a server this process starts: the client's echo server or vLLM, with
one fixed launch recipe for every point of a curve). Here, in the run folder:

1. :data:`POINT_MANIFEST` and the YAML files are written; the CNN/DM parquet is linked where the client's
   ``cnn_dailymail`` loader looks for it (``dataset_cache/cnn_dailymail/cnn_dailymail.parquet``, relative to its
   working directory), so no dataset hub is needed;
2. a managed server is started and waited for (its output in :data:`SERVER_LOG`);
3. the client runs the performance phase into :data:`CLIENT_REPORT_DIR`, then, at an accuracy point, the accuracy
   phase into :data:`CLIENT_ACCURACY_DIR` right after it, against the same server instance;
4. the client's steady-state detector runs where the client has one; :data:`STEADY_STATE` says what it found, or
   that this client has none;
5. :data:`RUN_MANIFEST` records the outcome; progress lines (:data:`PROGRESS`) come from the client's own
   ``events.jsonl`` while it runs.

Standard library only (this module is imported on the node). SIGINT/SIGTERM (``interrupts``): the client and the
server are stopped, the manifest says ``interrupted``, the exit code is 130 / 143.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import interrupts
from .args import EndpointPointArgs
from .errors import HarnessError
from .files import write_atomic
from .run_folder import (
    CLIENT_ACCURACY_DIR,
    CLIENT_ACCURACY_YAML,
    CLIENT_DATASETS_DIR,
    CLIENT_REPORT_DIR,
    CLIENT_YAML,
    POINT_MANIFEST,
    PROGRESS,
    RUN_MANIFEST,
    SERVER_LOG,
    STEADY_STATE,
    progress_record,
)

SERVER_URL = "__SERVER_URL__"  # in a managed server's job: replaced by the URL it listens on
SERVER_PORT = "__PORT__"  # in a managed server's argv: replaced by its port
STANDIN_TOKENIZER = "__STANDIN_TOKENIZER__"  # in the client's YAML: replaced by the stand-in tokenizer's folder
STANDIN_FALLBACK = "standin_tokenizer"  # in the run folder, when the shared cache cannot be written
EVENTS = "events.jsonl"  # the client's event log in its report folder
STEADY_STATE_MODULE = "inference_endpoint.metrics.steady_state_diagnostics"  # newer clients only
_STOP_GRACE_S = 10.0


class PointFailed(HarnessError):
    """The client or the managed server failed (exit code 1: the input was fine)."""

    exit_code = 1


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_BAR = re.compile(rb"\|\s*(\d+)/(\d+) \[")  # the client's progress bar on its output: "| 7/20 ["


class _EventCounter:
    """Counts the client's issued and completed samples by reading its ``events.jsonl`` as it grows, and, while the
    event log has not been written yet, from the progress bar on the client's output (``log``)."""

    def __init__(self, path: Path, log: Path | None = None) -> None:
        self.path, self.offset, self._partial, self.log = path, 0, b"", log
        self.events_issued = self.events_completed = self.bar = 0

    @property
    def issued(self) -> int:
        return max(self.events_issued, self.bar)

    @property
    def completed(self) -> int:
        return max(self.events_completed, self.bar)

    def update(self) -> None:
        self._from_events()
        if self.log is not None:
            try:
                with open(self.log, "rb") as f:
                    f.seek(max(0, f.seek(0, 2) - 8192))
                    bars = _BAR.findall(f.read())
            except OSError:
                bars = []
            if bars:
                self.bar = max(self.bar, int(bars[-1][0]))

    def _from_events(self) -> None:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                chunk = f.read(16 * 1024 * 1024)
        except FileNotFoundError:
            return
        self.offset += len(chunk)
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            if b'"sample.issued"' in line:
                self.events_issued += 1
            elif b'"sample.complete"' in line:
                self.events_completed += 1


class PointRun:
    def __init__(self, args: EndpointPointArgs) -> None:
        self.args = args
        self.folder = Path(args.output_dir).resolve()
        self.job: dict[str, Any] = json.loads(args.job)
        self.started = time.monotonic()
        self.started_at = _now()
        self.children: list[subprocess.Popen] = []
        self.phases: dict[str, Any] = {}
        self.last: tuple[_EventCounter, int] | None = None  # the last phase's counts, for the final progress line

    # ---- progress
    def _progress(self, counter: _EventCounter, total: int, *, final: bool = False) -> None:
        record = progress_record(time=_now(), elapsed_s=time.monotonic() - self.started, issued=counter.issued,
                                 completed=counter.completed, total=total, output_tokens=0, final=final)
        with open(self.folder / PROGRESS, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    # ---- processes
    def _wait(self, proc: subprocess.Popen, counter: _EventCounter | None, total: int) -> int:
        next_line = 0.0
        while True:
            if interrupts.pending() is not None:
                self._stop_all()
                interrupts.check()
            rc = proc.poll()
            now = time.monotonic()
            if counter is not None and (rc is not None or now >= next_line):
                counter.update()
                self._progress(counter, total)
                self.last = (counter, total)
                next_line = now + self.args.progress_interval_s
            if rc is not None:
                return rc
            time.sleep(0.1)

    def _stop(self, proc: subprocess.Popen) -> None:
        for sig, grace in ((signal.SIGINT, _STOP_GRACE_S), (signal.SIGTERM, 5.0), (signal.SIGKILL, 2.0)):
            if proc.poll() is not None:
                return
            try:
                proc.send_signal(sig)
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                continue
            except OSError:
                return

    def _stop_all(self) -> None:
        for proc in reversed(self.children):
            self._stop(proc)

    # ---- steps
    def prepare(self) -> None:
        dataset = Path(self.args.dataset).resolve()
        if not dataset.is_file():
            raise HarnessError(f"--dataset {dataset}: no such file (the point's CNN/DM parquet)")
        link = self.folder / CLIENT_DATASETS_DIR / "cnn_dailymail" / "cnn_dailymail.parquet"
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(dataset)
        manifest = {**self.job["manifest"], "run_id": self.args.run_id, "node": self.args.node or socket.gethostname()}
        manifest["client"] = {**manifest.get("client", {}), **self._client_facts()}
        manifest["dataset_path"] = str(dataset)  # the parquet the client read (its reference summaries)
        write_atomic(self.folder / POINT_MANIFEST, json.dumps(manifest, indent=2) + "\n")

    def _client_facts(self) -> dict[str, Any]:
        """The installed client's version and its Python's, asked of the client's own interpreter."""
        python = self.job.get("client_python")
        code = ("import importlib.metadata as m, json, platform\ntry:\n v = m.version('inference-endpoint')\n"
                "except Exception:\n v = None\nprint(json.dumps({'version': v, 'python_version': "
                "platform.python_version()}))")
        try:
            out = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=120)
            return json.loads(out.stdout) if out.returncode == 0 else {}
        except (OSError, ValueError, TypeError, subprocess.SubprocessError):
            return {}

    def record_server_url(self, url: str) -> None:
        """The URL the client talked to, in the point manifest (a started server's port is known only now)."""
        manifest = json.loads((self.folder / POINT_MANIFEST).read_text(encoding="utf-8"))
        manifest["server"] = {**manifest.get("server", {}), "url": url}
        write_atomic(self.folder / POINT_MANIFEST, json.dumps(manifest, indent=2) + "\n")

    def standin_tokenizer(self) -> str:
        """The echo curve's stand-in tokenizer (``echo_tokenizer.py``, run by the client's Python): built once into
        the job's cache folder and reused by every point; into the run folder when that cache cannot be written."""
        builder = str(Path(__file__).with_name("echo_tokenizer.py"))
        cache = Path(self.job["standin_tokenizer"]).expanduser()
        errors = []
        for out in (cache if cache.is_absolute() else self.folder / cache, self.folder / STANDIN_FALLBACK):
            try:
                proc = subprocess.run([self.job["client_python"], builder, str(out)], capture_output=True,
                                      text=True, timeout=600, stdin=subprocess.DEVNULL)
            except (OSError, subprocess.SubprocessError) as exc:
                errors.append(f"{out}: {exc}")
                continue
            if proc.returncode == 0:
                manifest = json.loads((self.folder / POINT_MANIFEST).read_text(encoding="utf-8"))
                manifest["server"] = {**manifest.get("server", {}), "tokenizer_path": str(out)}
                write_atomic(self.folder / POINT_MANIFEST, json.dumps(manifest, indent=2) + "\n")
                return str(out)
            lines = (proc.stderr or proc.stdout).strip().splitlines()
            errors.append(f"{out}: {lines[-1] if lines else f'exit code {proc.returncode}'}")
        raise PointFailed("cannot build the echo server's stand-in tokenizer with the client's Python "
                          f"({self.job['client_python']}): " + "; ".join(errors))

    def launch_server(self) -> int | None:
        """Start a managed server (not waited for: it starts while the point prepares); returns its port."""
        server = self.job["server"]
        if server["launch"] == "external":
            return None
        port = int(server.get("port") or 0) or _free_port()
        argv = [a.replace(SERVER_PORT, str(port)) for a in server["argv"]]
        log = open(self.folder / SERVER_LOG, "ab")
        try:
            proc = subprocess.Popen(argv, cwd=self.folder, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL)
        except OSError as exc:
            raise PointFailed(f"cannot start the {server['launch']} server ({argv[0]}): {exc}") from None
        finally:
            log.close()
        self.children.append(proc)
        return port

    def wait_server(self, port: int | None) -> str:
        """The URL the client talks to, once a started server listens."""
        server = self.job["server"]
        if port is None:
            return server["url"]
        proc = self.children[-1]
        deadline = time.monotonic() + float(server.get("ready_timeout_s", 600))
        while time.monotonic() < deadline:
            interrupts.check()
            if proc.poll() is not None:
                raise PointFailed(f"the {server['launch']} server exited with code {proc.returncode} before it "
                                   f"listened on port {port} (see {SERVER_LOG})")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    return f"http://127.0.0.1:{port}"
            except OSError:
                time.sleep(0.25)
        raise PointFailed(f"the {server['launch']} server did not listen on port {port} within "
                           f"{server.get('ready_timeout_s', 600)} s (see {SERVER_LOG})")

    def run_client(self, phase: str, yaml_name: str, yaml_text: str, report: str, mode: str, total: int,
                   url: str) -> None:
        write_atomic(self.folder / yaml_name, yaml_text.replace(SERVER_URL, url))
        argv = [*self.job["client_argv"], "benchmark", "from-config", "-c", yaml_name, "--mode", mode]
        started = _now()
        with open(self.folder / f"client_{phase}.log", "ab") as log:
            try:
                proc = subprocess.Popen(argv, cwd=self.folder, stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL)
            except OSError as exc:
                raise PointFailed(f"cannot start the reference client ({argv[0]}): {exc}") from None
            self.children.append(proc)
            rc = self._wait(proc, _EventCounter(self.folder / report / EVENTS, self.folder / f"client_{phase}.log"),
                            total)
            self.children.remove(proc)
        self.phases[phase] = {"argv": argv, "started": started, "finished": _now(), "returncode": rc}
        if rc != 0:
            raise PointFailed(f"the reference client's {phase} run exited with code {rc} (see client_{phase}.log)")

    def steady_state(self) -> None:
        python = self.job.get("client_python")
        result: dict[str, Any] = {"detector": STEADY_STATE_MODULE, "available": False}
        if python:
            probe = subprocess.run([python, "-c", f"import importlib.util as u, sys; sys.exit(0 if u.find_spec("
                                    f"{STEADY_STATE_MODULE!r}) else 3)"], capture_output=True, timeout=120)
            result["available"] = probe.returncode == 0
        if not result["available"]:
            result["reason"] = ("this reference client has no steady-state detector (it came after the pinned "
                                "commit); the point's figures are whole-run totals")
        else:
            out = subprocess.run([python, "-m", STEADY_STATE_MODULE, str(self.folder / CLIENT_REPORT_DIR)],
                                 capture_output=True, text=True, timeout=3600)
            result["returncode"] = out.returncode
            try:
                result["output"] = json.loads(out.stdout)
            except ValueError:
                result["output_text"] = out.stdout[-20000:]
        write_atomic(self.folder / STEADY_STATE, json.dumps(result, indent=2) + "\n")

    def manifest(self, status: str, error: str | None = None) -> None:
        data = {"kind": "endpoints_point", "run_id": self.args.run_id, "node": self.args.node,
                "label": self.job["manifest"].get("label"), "started": self.started_at, "finished": _now(),
                "exit_status": status, "phases": self.phases, "client": self.job["manifest"].get("client")}
        if error:
            data["error"] = error
        write_atomic(self.folder / RUN_MANIFEST, json.dumps(data, indent=2) + "\n")


def run_point(args: EndpointPointArgs) -> int:
    point = PointRun(args)
    point.folder.mkdir(parents=True, exist_ok=True)
    manifest = point.job["manifest"]
    try:
        port = point.launch_server()
        point.prepare()
        if point.job.get("standin_tokenizer"):
            tokenizer = point.standin_tokenizer()
            for key in ("perf_yaml", "accuracy_yaml"):
                if point.job.get(key):
                    point.job[key] = point.job[key].replace(STANDIN_TOKENIZER, json.dumps(tokenizer))
        url = point.wait_server(port)
        point.record_server_url(url)
        point.run_client("performance", CLIENT_YAML, point.job["perf_yaml"], CLIENT_REPORT_DIR, "perf",
                         int(manifest["n_samples_to_issue"]), url)
        if point.job.get("accuracy_yaml"):
            point.run_client("accuracy", CLIENT_ACCURACY_YAML, point.job["accuracy_yaml"], CLIENT_ACCURACY_DIR,
                             "acc", int(manifest["dataset_samples"]), url)
        point._stop_all()
        point.steady_state()
    except HarnessError as exc:
        point._stop_all()
        point.manifest("failed", str(exc))
        raise
    except KeyboardInterrupt as exc:
        point._stop_all()
        signum = getattr(exc, "signum", None) or interrupts.pending() or signal.SIGINT
        point.manifest("interrupted", interrupts.describe(signum))
        raise
    finally:
        shutil.rmtree(point.folder / CLIENT_DATASETS_DIR, ignore_errors=True)  # a link to the dataset: not collected
    if point.last is not None:
        point._progress(*point.last, final=True)
    point.manifest("completed")
    interrupts.commit_point()
    return 0

