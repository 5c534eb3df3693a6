"""``DockerRunner``: the harness in a container on a Docker engine (this machine's, or a remote one over ``ssh://`` or
``tcp://`` with TLS), through the Docker SDK for Python (``docker`` on PyPI); no ``docker`` command lines.

**Where the run folder lives.** Inside the container, at ``<workdir>/<run_id>/<mode>`` (``workdir`` defaults to
``/mlperf-dagster``), in the container's own file system. The runner reaches it only through the engine's API, so a
local and a remote engine behave the same and nothing has to be shared between the orchestrator and the engine's host:

- ``start`` creates the container, copies the run spec and the prepared dataset into it (``put_archive``; with
  ``datasets_volume`` the dataset is kept in that named volume and copied only when its sha256 changed), then starts it;
- ``poll`` runs one short ``sh`` status command in the running container (``exec``: the exit code, the cancel marker
  and the tail of ``progress.jsonl``, as ``remote_shell`` renders it for the SSH and Kubernetes runners); once the
  container has exited, it reads the same files with ``get_archive``, which works on a stopped container;
- ``collect`` streams the run folder out as one tar into a temporary folder that replaces the destination only when
  complete (``files.replacing_folder``): nothing is ever half-collected;
- the container is not removed when it exits: until it is collected it *is* the run folder. ``discard`` (after a
  successful collection) removes it. A container removed by anyone else is a run that is gone (:class:`RunGone`).

**Processes.** Docker's init (``init: true``) is PID 1; under it a small Python forwarder (:data:`FORWARDER_CODE`)
starts the exit-code supervisor (``base.wrapped_argv``) in its own process group, records its pid in ``pid`` and
forwards SIGTERM/SIGINT/SIGHUP to that group; the supervisor runs the harness and writes ``exit_code``. ``cancel``
marks the run folder, sends SIGTERM to the container (the harness stops LoadGen, marks its run folder and exits 143),
and SIGKILL after ``cancel_grace_s``. The container's exit code is the harness's; a container killed from outside
(``docker kill``, the kernel's OOM killer: exit code 137) is reported with that code and the engine's OOM flag.

**Reattach.** Every run container carries labels ``mlperf-dagster.run-id``, ``.node``, ``.scenario``, ``.mode``,
``.component`` and the run spec itself, and a name derived from them. ``start`` of a run id that already has a
container on the engine adopts it (when its spec matches) instead of launching a second harness, exactly as the SSH
and Kubernetes runners do, so an orchestrator restarted mid-run (``ledger.PartitionRun``) picks the run up where it
is; ``active_runs`` lists the node's running containers by label (``mlperf-dagster monitor``). A container that was
created but never started (the engine refused it, or the orchestrator died in between) holds nothing: it is removed
and made again from the node's current settings. A run that ends as interrupted without the cancel marker was
stopped from outside (``docker stop``, the engine restarting) and is reported so, as a failure.

**The image.** Pull policy ``pull``: ``never`` (the image must be on the engine), ``missing`` (pull only when absent)
or ``always``. Before the first launch of an image, a short-lived container asks its ``python`` for the harness
version (:data:`HARNESS_VERSION_CODE`); major.minor must match the orchestrator's, as for SSH nodes. That container
is named after the node (:func:`check_container_name`), so one left by an orchestrator killed mid-check is removed by
the node's next check. An image without the harness (a stock vLLM image) runs it from ``harness_source``: the
project's source on the engine's host, mounted read-only (a ``--mount`` bind, which the engine refuses when the
folder is missing) and put on ``PYTHONPATH`` (the image still needs the ``[node]`` dependencies; docker/README.md).

**Engines and secrets.** ``docker_host`` unset: the local engine (``$DOCKER_HOST``, else ``/var/run/docker.sock``);
``unix:///path``; ``ssh://user@host[:port]``: the SDK's paramiko transport, connected by ``ssh_connection``'s
``SSHConnection`` (host key checked against ``known_hosts``; an unknown or changed key is refused, never added; key
file, passphrase by variable name), with ``docker system dial-stdio`` run on the host; ``tcp://host:port``: TLS with
the node's CA (and client certificate). ``env`` lists NAMES: the values are read from the orchestrator's environment at
start and go only into the engine's create request (like ``docker run -e``: visible to whoever may inspect containers
on that engine), never into the config, the run handle, a log line or ``mlperf-dagster render``'s output.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tarfile
import tempfile
import time
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterable

import docker
import docker.errors
import requests.exceptions
from docker.types import DeviceRequest
from docker.utils import parse_repository_tag

from mlperf_assets.config import DockerNode
from mlperf_assets.harness.args import HARNESS_MODULE, RunSpec
from mlperf_assets.harness.files import replacing_folder
from mlperf_assets.harness.run_folder import (
    CANCEL_REQUESTED,
    CANCELLED,
    EXIT_CODE,
    FAILED,
    PROGRESS,
    RUN_SPEC,
    RUNNER_LOG,
    RUNNING,
    RunProgress,
    progress_from_texts,
)
from mlperf_assets.plan import check_node_gpus, node_gpu_count

from .base import BenchmarkRunner, RunGone, RunHandle, RunnerError, RunUnreachable, stopped_from_outside, wrapped_argv
from .harness_check import HARNESS_DIST, judge_answer, local_harness_version
from .remote_shell import DATASETS_DIR, StatusCutShort, parse_status_output, render_status_command, sha256_file

LABEL = "mlperf-dagster"  # label keys: mlperf-dagster.run-id, .node, .scenario, .mode, .component, .spec
COMPONENT_RUN = "benchmark-run"
COMPONENT_CHECK = "harness-check"
HARNESS_MOUNT = "/opt/mlperf-dagster/src"  # where harness_source is mounted (read-only) and put on PYTHONPATH
LIVE_STATES = ("created", "running", "paused", "restarting")
OUTSIDE_STOPPERS = "docker stop, docker kill -s TERM, or the engine stopping or restarting"


# ---------------------------------------------------------------------------------------------- errors
class DockerRunnerError(RunnerError):
    """The Docker runner could not create, watch, collect or stop a container; one line naming the node."""


class DockerUnreachable(DockerRunnerError, RunUnreachable):
    """The engine could not be asked (socket missing, connection refused, SSH or TLS refused, an API error)."""


class EngineRefused(DockerRunnerError):
    """The engine answered a request with an error (``status_code``: 400 bad request, 409 conflict, 500 it failed)."""

    def __init__(self, message: str, status_code: int | None) -> None:
        super().__init__(message)
        self.status_code = status_code


class ContainerGone(DockerRunnerError, RunGone):
    """The engine answered: the run's container no longer exists."""


class ImageError(DockerRunnerError):
    """The node's image is not on the engine and could not (or may not) be pulled."""


class HarnessMismatch(DockerRunnerError):
    """The image's python cannot import the harness, or has another major.minor version than the orchestrator."""


# ------------------------------------------------------------------------------------- code run in containers
# PID 2 under docker's init (or PID 1 with init: false): run argv[2:] (the supervisor) in its own process group in
# the run folder argv[1], record its pid, forward SIGINT/SIGTERM/SIGHUP to the whole group, exit with its exit code.
FORWARDER_CODE = """\
import os, signal, subprocess, sys
run_dir, argv = sys.argv[1], sys.argv[2:]
child, pending = None, []
def forward(sig, frame):
    if child is None:
        pending.append(sig)
        return
    try:
        os.killpg(child.pid, sig)
    except ProcessLookupError:
        pass
for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(sig, forward)
child = subprocess.Popen(argv, cwd=run_dir, start_new_session=True, stdin=subprocess.DEVNULL)
with open(os.path.join(run_dir, "pid.tmp"), "w") as f:
    f.write("%d\\n" % child.pid)
os.replace(os.path.join(run_dir, "pid.tmp"), os.path.join(run_dir, "pid"))
for sig in pending:
    forward(sig, None)
rc = child.wait()
sys.exit(rc if 0 <= rc < 256 else (128 - rc if rc < 0 else 1))
"""

# What the image's python prints: the harness version it imports, or why it cannot. A source tree on PYTHONPATH
# (harness_source) answers with its pyproject.toml's version; an installed harness with its distribution's.
HARNESS_VERSION_CODE = f"""\
import json, os, re, sys
try:
    import {HARNESS_MODULE} as harness
except Exception as exc:
    print(json.dumps({{"ok": False, "error": "%s: %s" % (type(exc).__name__, exc), "python": sys.version.split()[0]}}))
    sys.exit(0)
version = None
root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(harness.__file__))))
pyproject = os.path.join(root, "pyproject.toml")
if os.path.isfile(pyproject):
    with open(pyproject) as f:
        text = f.read()
    if re.search(r'^name\\s*=\\s*"{HARNESS_DIST}"', text, re.M):
        match = re.search(r'^version\\s*=\\s*"([^"]+)"', text, re.M)
        version = match.group(1) if match else None
if version is None:
    try:
        from importlib import metadata
        version = metadata.version({HARNESS_DIST!r})
    except Exception:
        import mlperf_assets
        version = getattr(mlperf_assets, "__version__", None)
print(json.dumps({{"ok": True, "version": version, "python": sys.version.split()[0], "module": harness.__file__}}))
"""


# ------------------------------------------------------------------------------------------ pure helpers
def container_name(node: str, run_id: str, mode: str) -> str:
    """The run's container name: readable, and unique per (node, run id, mode) through a short hash."""
    digest = hashlib.sha256(f"{node}\0{run_id}\0{mode}".encode()).hexdigest()[:8]
    return f"mlperf-{run_id[:80]}-{mode}-{digest}"


def check_container_name(node: str) -> str:
    """The harness check's container name: one per node, so a check left running by a killed orchestrator is found
    (and removed) by the next one, and ``docker ps`` says whose it is."""
    return f"mlperf-check-{node}-{hashlib.sha256(node.encode()).hexdigest()[:8]}"


def gpu_device_requests(gpus: int | str | list[str]) -> list[dict[str, Any]]:
    """The engine's DeviceRequests for the node's ``gpus``, as ``docker run --gpus`` builds them."""
    if gpus == 0 or gpus == []:
        return []
    request: dict[str, Any] = {"Driver": "", "Count": 0, "DeviceIDs": None, "Capabilities": [["gpu"]], "Options": {}}
    if gpus == "all":
        request["Count"] = -1
    elif isinstance(gpus, list):
        request["DeviceIDs"] = list(gpus)
    else:
        request["Count"] = int(gpus)
    return [request]


def labels_for(spec: RunSpec, component: str = COMPONENT_RUN) -> dict[str, str]:
    return {
        f"{LABEL}.component": component,
        f"{LABEL}.run-id": spec.run_id,
        f"{LABEL}.node": spec.node,
        f"{LABEL}.scenario": spec.scenario,
        f"{LABEL}.mode": spec.mode,
        f"{LABEL}.spec": spec.to_json(),
    }


def container_paths(node: DockerNode, spec: RunSpec, dataset_name: str) -> tuple[str, str, str]:
    """(run folder, datasets folder, dataset file) inside the container."""
    run_dir = f"{node.workdir}/{spec.run_id}/{spec.mode}"
    datasets = f"{node.workdir}/{DATASETS_DIR}"
    return run_dir, datasets, f"{datasets}/{dataset_name}"


def _mounts(node: DockerNode, datasets_dir: str) -> dict[str, dict[str, str]]:
    """The node's ``volumes`` and ``datasets_volume``, as ``docker run -v`` takes them (a missing host folder is
    created by the engine). Config validation refuses a source given twice, which this mapping would lose."""
    volumes: dict[str, dict[str, str]] = {}
    for item in node.volumes:
        source, target, *mode = item.split(":")
        volumes[source] = {"bind": target, "mode": mode[0] if mode else "rw"}
    if node.datasets_volume:
        volumes[node.datasets_volume] = {"bind": datasets_dir, "mode": "rw"}
    return volumes


def _bind_mounts(node: DockerNode) -> list[dict[str, Any]]:
    """``harness_source`` as the engine's Mounts entry (``docker run --mount``): unlike ``-v``, the engine refuses a
    source that does not exist instead of creating an empty folder on its host."""
    if not node.harness_source:
        return []
    return [{"Type": "bind", "Source": node.harness_source, "Target": HARNESS_MOUNT, "ReadOnly": True}]


def _static_env(node: DockerNode, run_id: str | None = None) -> dict[str, str]:
    env = {"PYTHONUNBUFFERED": "1"}
    if run_id:
        env["MLPERF_DAGSTER_RUN_ID"] = run_id
    if node.user:
        env["HOME"] = node.workdir  # another user may have no (writable) home: caches go below the run folders
    if node.harness_source:
        env["PYTHONPATH"] = HARNESS_MOUNT
        env["PYTHONDONTWRITEBYTECODE"] = "1"  # the mount is read-only
    return env


def build_container_spec(spec: RunSpec, node: DockerNode, *, dataset_name: str) -> dict[str, Any]:
    """The container one harness run gets, as the Docker SDK's ``containers.create`` keywords (plain data; device
    requests as the engine's JSON), plus ``env_from_orchestrator``: the NAMES whose values are added at start. Pure."""
    labels = labels_for(spec)  # the spec as planned: what a restarted orchestrator compares its own plan with
    check_node_gpus(spec, node_gpu_count(node))  # the container gets them all: the plan's layout must use them all
    run_dir, datasets_dir, dataset_path = container_paths(node, spec, dataset_name)
    harness = spec.harness_argv(node.python, run_dir, dataset_path=dataset_path)
    supervised = wrapped_argv(node.python, run_dir, harness)
    kwargs: dict[str, Any] = {
        "image": node.image,
        "name": container_name(spec.node, spec.run_id, spec.mode),
        "entrypoint": [node.python, "-c", FORWARDER_CODE],
        "command": [run_dir, *supervised],
        "working_dir": node.workdir,
        "labels": labels,
        "environment": _static_env(node, spec.run_id),
        "env_from_orchestrator": list(node.env),
        "network_mode": node.network,
        "ipc_mode": node.ipc,
        "init": node.init,
        "device_requests": gpu_device_requests(node.gpus),
        "volumes": _mounts(node, datasets_dir),
        "mounts": _bind_mounts(node),
        "detach": True,
        "stdin_open": False,
        "tty": False,
    }
    if node.shm_size:
        kwargs["shm_size"] = node.shm_size
    if node.user:
        kwargs["user"] = node.user
    return kwargs


def spec_yaml(container_spec: dict[str, Any]) -> str:
    """A container spec as YAML, multi-line strings (the two small Python programs) as literal blocks."""
    import yaml

    class _Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:
            return True

    def _str(dumper: yaml.SafeDumper, data: str) -> Any:
        style = "|" if "\n" in data else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)

    _Dumper.add_representer(str, _str)
    return yaml.dump(dict(container_spec), Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=120)


def _tar_of(files: Iterable[tuple[str, bytes | Path]], dirs: Iterable[str]) -> Any:
    """A tar (in a temporary file, rewound) holding ``dirs`` (mode 0777: a non-root ``user`` writes the run folder)
    and ``files`` (path relative to /, content or a local file), for ``put_archive(path="/")``."""
    out = tempfile.TemporaryFile()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for d in dirs:
            info = tarfile.TarInfo(d.lstrip("/"))
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o777, int(time.time())
            tar.addfile(info)
        for path, content in files:
            info = tarfile.TarInfo(path.lstrip("/"))
            info.mode, info.mtime = 0o644, int(time.time())
            if isinstance(content, Path):
                info.size = content.stat().st_size
                with open(content, "rb") as f:
                    tar.addfile(info, f)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    out.seek(0)
    return out


def _parents(path: str) -> list[str]:
    """``/a/b/c`` -> ``["/a", "/a/b", "/a/b/c"]`` (folders a tar must create, outermost first)."""
    parts = PurePosixPath(path).parts[1:]
    return ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]


# ------------------------------------------------------------------------------------------ ssh:// engines
def _ssh_client(node: DockerNode, timeout: float) -> Any:
    """A DockerClient over SSH: the SDK's paramiko transport, connected by ``ssh_connection.SSHConnection`` (so the
    same known_hosts rules, errors and key handling apply), then ``docker system dial-stdio`` on the host."""
    from urllib.parse import urlparse

    from docker.transport import SSHHTTPAdapter

    from mlperf_assets.config import SSHNode

    from .ssh_connection import SSHConnection  # imports paramiko: only for ssh:// engines

    url = urlparse(node.docker_host)
    ssh_node = SSHNode(
        name=node.name, runner="ssh", host=url.hostname or "", port=url.port or 22, user=url.username,
        key_file=node.key_file, key_passphrase_env=node.key_passphrase_env, known_hosts=node.known_hosts,
        connect_timeout_s=node.connect_timeout_s, command_timeout_s=timeout,
    )  # fmt: skip
    connection = SSHConnection(ssh_node)

    class Adapter(SSHHTTPAdapter):
        def _create_paramiko_client(self, base_url: str) -> None:
            self.ssh_params = {}

        def _connect(self) -> None:
            connection.connect()
            self.ssh_client = connection._client

        def close(self) -> None:
            super().close()
            connection.close()

    # An APIClient for a socket it never opens (a fixed version: no request yet), then given the SSH transport.
    api = docker.APIClient(base_url="unix:///nonexistent.sock", version="1.24", timeout=timeout)
    # The SDK keeps one connection pool, so one SSH session, per request URL; sshd allows 10 sessions per connection
    # (MaxSessions): keep at most 4 pools (closing a pool closes its session).
    adapter = Adapter(node.docker_host, timeout=timeout, pool_connections=4, max_pool_size=1)  # connects: may raise
    # HostKeyError, SSHAuthError, NodeUnreachableError (RunUnreachable, with ssh_connection's messages)
    api._custom_adapter.close()
    api._custom_adapter = adapter
    api.mount("http+docker://ssh", adapter)
    api.base_url = "http+docker://ssh"
    api._version = api._retrieve_server_version()
    client = docker.DockerClient.__new__(docker.DockerClient)
    client.api = api
    return client


# ---------------------------------------------------------------------------------------------- runner
class DockerRunner(BenchmarkRunner):
    """Runs the harness in containers on one Docker engine, configured by a ``config.DockerNode`` (see the module
    docstring; ``mlperf-dagster render`` prints the container a run gets). Option ``check_harness_version``:
    refuse an image whose harness differs from the orchestrator's in major.minor (default true); ``check_timeout_s``:
    how long the image's python may take to answer that check."""

    kind = "docker"
    settings_model = DockerNode
    OPTIONS = ("poll_interval_s", "check_harness_version", "check_timeout_s")
    check_harness_version = True
    check_timeout_s: float | None = None  # how long the harness check may take; None: max(60 s, api_timeout_s)

    def __init__(self, settings: DockerNode | None = None, /, **fields: Any) -> None:
        super().__init__(settings, **fields)
        self._client: Any = None
        self._checked_images: set[str] = set()
        self._last: dict[str, RunProgress] = {}
        self._outage_since: dict[str, float] = {}

    # ---- the engine
    @property
    def engine(self) -> str:
        """The engine as a person names it in a message."""
        return self.docker_host or "the local Docker engine"

    def client(self) -> Any:
        """The DockerClient, connected (and the engine answering) or :class:`DockerUnreachable`."""
        if self._client is None:
            self._client = self._api("connecting", self._connect)
        return self._client

    def _connect(self) -> Any:
        timeout = self.api_timeout_s
        host = self.docker_host
        if host is None:
            client = docker.from_env(timeout=timeout)
        elif host.startswith("ssh://"):
            client = _ssh_client(self.settings, timeout)
        elif host.startswith("tcp://"):
            from docker.tls import TLSConfig

            cert = (str(self.tls_client_cert), str(self.tls_client_key)) if self.tls_client_cert else None
            tls = TLSConfig(client_cert=cert, ca_cert=str(self.tls_ca_cert), verify=str(self.tls_ca_cert))
            client = docker.DockerClient(base_url=host, tls=tls, timeout=timeout, version="auto")
        else:
            client = docker.DockerClient(base_url=host, timeout=timeout, version="auto")
        client.ping()
        return client

    def _api(self, what: str, fn: Callable[[], Any]) -> Any:
        """``fn()``, with the engine's error answers as :class:`EngineRefused` and transport failures as
        :class:`DockerUnreachable` (one line each; the connection is dropped so the next call reconnects).
        ``docker.errors.NotFound`` passes through: what a missing object means is the caller's to say."""
        try:
            return fn()
        except (docker.errors.NotFound, RunnerError):
            raise
        except docker.errors.APIError as exc:
            raise EngineRefused(f"node {self.node}: {what} on {self.engine} failed: {_explain(exc)}", exc.status_code) from None
        except (docker.errors.DockerException, requests.exceptions.RequestException, OSError, EOFError) as exc:
            self._drop_client()
            hint = ""
            if self.docker_host and self.docker_host.startswith("ssh://"):
                hint = " (is the docker CLI installed on that host, and may the SSH user use the engine?)"
            raise DockerUnreachable(
                f"node {self.node}: cannot reach {self.engine} while {what}: {_explain(exc)}{hint}"
            ) from None
        except Exception as exc:  # noqa: BLE001 - paramiko and urllib3 errors from a dropped SSH transport
            if type(exc).__module__.split(".")[0] not in ("paramiko", "urllib3"):
                raise
            self._drop_client()
            raise DockerUnreachable(f"node {self.node}: cannot reach {self.engine} while {what}: {_explain(exc)}") from None

    def _drop_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:  # noqa: BLE001 - closing a broken connection
                pass

    def close(self) -> None:
        self._drop_client()

    def _container(self, handle: RunHandle) -> Any:
        ref = handle.extra.get("container") or container_name(handle.node, handle.run_id, handle.mode)
        client = self.client()
        try:
            return self._api("reading the run's container", lambda: client.containers.get(ref))
        except docker.errors.NotFound:
            raise ContainerGone(
                f"node {self.node}: container {handle.extra.get('name', ref)} of run {handle.run_id} ({handle.mode}) "
                f"no longer exists on {self.engine}"
            ) from None

    # ---- the image and its harness
    def ensure_image(self) -> Any:
        """The node's image on the engine, pulled as the ``pull`` policy says; :class:`ImageError` if unavailable."""
        client = self.client()
        image = self.image
        if self.pull != "always":
            try:
                return self._api("looking up the image", lambda: client.images.get(image))
            except docker.errors.NotFound:
                if self.pull == "never":
                    raise ImageError(
                        f"node {self.node}: image {image} is not on {self.engine} and pull is never; build it there "
                        "(docker/README.md) or set pull: missing"
                    ) from None
        repository, tag = parse_repository_tag(image)
        try:
            return self._api("pulling the image", lambda: client.images.pull(repository, tag=tag or "latest"))
        except EngineRefused as exc:
            reason = str(exc).split(" failed: ", 1)[-1]
            raise ImageError(
                f"node {self.node}: image {image} could not be pulled onto {self.engine} (pull: {self.pull}): {reason}; "
                "build or load it on the engine (docker/README.md) and set pull: never or missing"
            ) from None

    def check_harness(self, image: Any = None) -> dict[str, Any]:
        """Ask the image's python for its harness version (a short-lived container, no network); raise
        :class:`HarnessMismatch` with the fix when it cannot import it or the major.minor differs."""
        image = image if image is not None else self.ensure_image()
        self._remove_stale_checks()
        kwargs: dict[str, Any] = {
            "image": image.id,
            "name": check_container_name(self.node),
            "entrypoint": [self.python, "-c", HARNESS_VERSION_CODE],
            "command": [],
            "environment": _static_env(self.settings),
            "volumes": _mounts(self.settings, f"{self.workdir}/{DATASETS_DIR}"),
            "mounts": _bind_mounts(self.settings),
            "network_mode": "none",
            "labels": {f"{LABEL}.component": COMPONENT_CHECK, f"{LABEL}.node": self.node},
            "detach": True,
        }
        if self.user:
            kwargs["user"] = self.user
        where = f"in image {self.image}" + (f" (harness_source {self.harness_source})" if self.harness_source else "")
        fix = (
            f"build the image with the orchestrator's version (docker/Dockerfile: pip install "
            f"'{HARNESS_DIST}[node]=={local_harness_version()}'), or mount this checkout's source with harness_source "
            "(docker/README.md)"
        )
        container = self._create("creating the harness check container", kwargs)
        try:
            try:
                self._api("starting the harness check container", container.start)
            except EngineRefused as exc:
                reason = str(exc).split(" failed: ", 1)[-1]
                if "executable file not found" in reason or "no such file or directory" in reason:
                    raise HarnessMismatch(
                        f"node {self.node}: {self.image} cannot run {self.python!r} ({reason}); set python: to the image's "
                        "interpreter"
                    ) from None
                raise
            result = self._wait_for_check(container, where)
            output = self._api("reading the harness check", lambda: container.logs(stdout=True, stderr=True))
        finally:
            self._remove(container)
        info = judge_answer(
            output.decode(errors="replace"), node=self.node, python=self.python, where=where,
            exit_code=result.get("StatusCode"), fix=fix, check_version=self.check_harness_version, error=HarnessMismatch,
        )
        self._checked_images.add(image.id)
        return info

    def _wait_for_check(self, container: Any, where: str) -> dict[str, Any]:
        """The check container's exit status; :class:`HarnessMismatch` when its python has not answered within
        ``check_timeout_s`` (a hanging import is the image's problem, not the engine's)."""
        timeout = self.check_timeout_s or max(60.0, self.api_timeout_s)

        def wait() -> dict[str, Any] | None:
            try:
                return container.wait(timeout=timeout)
            except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
                return None  # no answer in time, or the engine went away: ask the engine which

        try:
            result = self._api("waiting for the harness check", wait)
            if result is None:
                self._api("reading the harness check container", container.reload)
                if container.status in LIVE_STATES:
                    raise HarnessMismatch(
                        f"node {self.node}: {self.python} {where} did not answer the harness check within "
                        f"{timeout:g} s (does importing the harness hang in this image?)"
                    )
                result = self._api("waiting for the harness check", lambda: container.wait(timeout=timeout))
        except docker.errors.NotFound:
            raise DockerRunnerError(
                f"node {self.node}: the harness check container {container.name} was removed on {self.engine} before "
                "it answered; run again"
            ) from None
        return result

    def _remove_stale_checks(self) -> None:
        """Remove this node's harness check containers left behind by an orchestrator killed mid-check."""
        client = self.client()
        for item in self._list([f"{LABEL}.component={COMPONENT_CHECK}", f"{LABEL}.node={self.node}"]):
            try:
                client.api.remove_container(item["Id"], force=True, v=True)
            except docker.errors.APIError:
                pass  # removed meanwhile, or already being removed

    def _create(self, what: str, kwargs: dict[str, Any]) -> Any:
        """``containers.create(**kwargs)``; a missing ``harness_source`` is one line naming it."""
        client = self.client()
        try:
            return self._api(what, lambda: client.containers.create(**kwargs))
        except EngineRefused as exc:
            if self.harness_source and "bind source path does not exist" in str(exc):
                host = f"the engine's host ({self.docker_host})" if self.docker_host else "this machine (the local engine's host)"
                raise DockerRunnerError(
                    f"node {self.node}: harness_source {self.harness_source} does not exist on {host}; put this "
                    "checkout's source there or fix the path"
                ) from None
            raise

    # ---- start
    def container_spec(self, spec: RunSpec) -> dict[str, Any]:
        """The container this runner would create for ``spec`` (pure; ``mlperf-dagster render`` prints it)."""
        try:
            return build_container_spec(spec, self.settings, dataset_name=Path(spec.dataset_path).name)
        except ValueError as exc:
            raise DockerRunnerError(f"node {self.node}: {exc}") from None

    def render(self, spec: RunSpec) -> str:
        """The container spec as YAML, under a comment naming the engine and what the keys mean."""
        container = self.container_spec(spec)
        engine = self.docker_host or "the local engine ($DOCKER_HOST or /var/run/docker.sock)"
        return (
            f"# the container node {self.node} gets for {spec.scenario} {spec.mode} on {engine}: Docker SDK\n"
            "# containers.create() keywords. env_from_orchestrator: names whose values are read from the orchestrator's\n"
            "# environment at start. Before it starts, the run spec and the prepared dataset are copied into it.\n"
            + spec_yaml(container)
        )

    def _list(self, labels: list[str]) -> list[dict[str, Any]]:
        """The engine's short records (Id, Names, Labels, State) of the containers with all ``labels`` (KEY=VALUE).
        Not ``containers.list()``: it inspects each one, and fails when one is removed meanwhile."""
        client = self.client()
        return self._api("listing containers", lambda: client.api.containers(all=True, filters={"label": labels}))

    def _find(self, spec: RunSpec) -> Any | None:
        """The container of ``spec``'s run id and mode on this node, if there is one."""
        client = self.client()
        for item in self._list([f"{LABEL}.run-id={spec.run_id}", f"{LABEL}.mode={spec.mode}", f"{LABEL}.node={self.node}"]):
            try:
                return self._api("reading a container", lambda: client.containers.get(item["Id"]))
            except docker.errors.NotFound:
                continue  # removed since the listing
        return None

    def start(self, spec: RunSpec) -> RunHandle:
        dataset = Path(spec.dataset_path).resolve()
        if not dataset.is_file():
            raise RunnerError(f"node {self.node}: prepared dataset {dataset} does not exist")
        missing = [name for name in self.env if name not in os.environ]
        if missing:
            raise RunnerError(f"node {self.node}: env names unset environment variable(s): {', '.join(missing)}")
        existing = self._find(spec)
        if existing is not None and existing.status == "created":
            # Never started (the orchestrator died before starting it, or the engine refused to): nothing ran in it,
            # and it was made from the node's settings of then. Make it again from today's.
            self._remove(existing)
        elif existing is not None:
            return self._adopt(existing, spec, dataset)
        image = self.ensure_image()
        if image.id not in self._checked_images:
            self.check_harness(image)
        kwargs = self.container_spec(spec)
        env_names = kwargs.pop("env_from_orchestrator")
        kwargs["environment"] = {**kwargs["environment"], **{name: os.environ[name] for name in env_names}}
        kwargs["device_requests"] = [
            DeviceRequest(driver=r["Driver"], count=r["Count"], device_ids=r["DeviceIDs"], capabilities=r["Capabilities"])
            for r in kwargs["device_requests"]
        ]
        kwargs["image"] = image.id  # the image checked above, even if the tag moves meanwhile
        kwargs["labels"][f"{LABEL}.image"] = self.image
        try:
            container = self._create("creating the container", kwargs)
        except EngineRefused as exc:
            if exc.status_code == 409:  # the name is taken: another orchestrator created it just now
                existing = self._find(spec)
                if existing is not None:
                    return self._adopt(existing, spec, dataset)
            raise
        return self._stage_and_start(container, spec, dataset, reattached=False)

    def _handle(self, container: Any, spec: RunSpec, dataset: Path) -> RunHandle:
        run_dir, _, _ = container_paths(self.settings, spec, dataset.name)
        return RunHandle(
            run_id=spec.run_id,
            node=self.node,
            run_dir=run_dir,
            scenario=spec.scenario,
            mode=spec.mode,
            extra={"container": container.id, "name": container.name, "engine": self.engine},
        )

    def _stage_and_start(self, container: Any, spec: RunSpec, dataset: Path, *, reattached: bool) -> RunHandle:
        """Copy the run spec and the dataset into the created container, then start it (a container the engine will
        not start is removed: nothing ran in it)."""
        handle = self._handle(container, spec, dataset)
        run_dir, datasets_dir, dataset_path = container_paths(self.settings, spec, dataset.name)
        digest = sha256_file(dataset)
        files: list[tuple[str, bytes | Path]] = [(f"{run_dir}/{RUN_SPEC}", spec.to_json().encode())]
        if not (self.datasets_volume and self._read(container, f"{dataset_path}.sha256", "").split()[:1] == [digest]):
            files += [(dataset_path, dataset), (f"{dataset_path}.sha256", f"{digest}  {dataset.name}\n".encode())]
        dirs = sorted({*_parents(run_dir), *_parents(datasets_dir)})
        archive = _tar_of(files, dirs)
        try:
            self._api("copying the run spec and dataset in", lambda: container.put_archive("/", archive))
            self._api("starting the container", container.start)
        except (EngineRefused, docker.errors.NotFound) as exc:
            # 404 is the engine refusing too (network X not found), not the container gone: either way nothing ran
            reason = str(exc).split(" failed: ", 1)[-1] if isinstance(exc, EngineRefused) else _explain(exc)
            self._remove(container)
            raise DockerRunnerError(
                f"node {self.node}: container {container.name} from {self.image} did not start: {reason}"
            ) from None
        finally:
            archive.close()
        if reattached:
            handle.extra["reattached"] = True
        return handle

    def _adopt(self, container: Any, spec: RunSpec, dataset: Path) -> RunHandle:
        """The run id already has a container on the engine: check it is the same run, then watch it."""
        try:
            theirs = RunSpec.from_json(container.labels.get(f"{LABEL}.spec", ""))
        except (ValueError, TypeError) as exc:
            raise DockerRunnerError(
                f"node {self.node}: container {container.name} holds run {spec.run_id} without a readable spec label "
                f"({exc}); refusing to start a second harness"
            ) from None
        mine, recorded = spec.identity(), theirs.identity()
        diffs = [key for key in mine if mine[key] != recorded[key]]
        if diffs:
            raise DockerRunnerError(
                f"node {self.node}: run {spec.run_id} ({spec.mode}) already exists on {self.engine} (container "
                f"{container.name}) with different {', '.join(diffs)}; run ids must be unique"
            )
        if container.status == "created":  # another orchestrator created it just now and is about to start it
            return self._stage_and_start(container, spec, dataset, reattached=True)
        handle = self._handle(container, spec, dataset)
        handle.extra["reattached"] = True
        return handle

    # ---- files in a container
    def _read(self, container: Any, path: str, default: str | None = None, *, limit: int | None = None) -> str | None:
        """A file's text through ``get_archive`` (running or stopped container); ``default`` if it does not exist.
        ``limit``: keep only its last bytes."""

        def fetch() -> bytes | None:
            try:
                chunks, _ = container.get_archive(path)
                data = b"".join(chunks)
            except docker.errors.NotFound:
                return None
            with tarfile.open(fileobj=io.BytesIO(data)) as tar:
                member = next((m for m in tar.getmembers() if m.isfile()), None)
                extracted = tar.extractfile(member) if member is not None else None
                return extracted.read() if extracted is not None else None

        data = self._api(f"reading {path}", fetch)
        if data is None:
            return default
        if limit is not None:
            data = data[-limit:]
        return data.decode(errors="replace")

    def _exec(self, container: Any, command: str) -> tuple[int, str]:
        result = self._api("running a status command", lambda: container.exec_run(["sh", "-c", command]))
        return int(result.exit_code or 0), (result.output or b"").decode(errors="replace")

    # ---- poll
    def poll(self, handle: RunHandle) -> RunProgress:
        try:
            progress = self._poll(handle)
        except DockerUnreachable as exc:
            last = self._last.get(handle.run_dir)
            now = time.monotonic()
            since = self._outage_since.setdefault(handle.run_dir, now)
            if last is None or last.done or now - since > self.reconnect_timeout_s:
                raise
            reason = str(exc).removeprefix(f"node {self.node}: ")
            return replace(last, state=RUNNING, stale=True, message=f"{reason}; retrying for {now - since:.0f} s")
        self._outage_since.pop(handle.run_dir, None)
        self._last[handle.run_dir] = progress
        return progress

    def _poll(self, handle: RunHandle) -> RunProgress:
        container = self._container(handle)
        problem, stopping = "", False
        for attempt in range(3):
            if attempt:
                time.sleep(0.2)
                container = self._container(handle)
            if container.status == "created":
                return RunProgress(state=RUNNING, message=f"container {container.name} created, not started yet")
            if container.status not in ("running", "paused", "restarting"):
                return self._stopped_progress(container, handle)
            if container.status == "paused":  # nothing can be run in it; its harness is frozen, not gone
                last = self._last.get(handle.run_dir, RunProgress())
                return replace(last, state=RUNNING, message=f"container {container.name} is paused (docker unpause)")
            try:
                code, out = self._exec(container, render_status_command(handle.run_dir))
            except EngineRefused as exc:
                # The container stopped between the status check and the exec: the engine answers 409 to the exec's
                # create, another code when it stops between the create and the start ("is not running"). Either
                # way it is stopping: ask again. An exec refused in a container still live is an error.
                if exc.status_code != 409 and self._container(handle).status in LIVE_STATES:
                    raise
                problem, stopping = str(exc), True
                continue
            except docker.errors.NotFound:
                problem, stopping = "its exec went with it", True  # it stopped: ask again
                continue
            try:
                remote = parse_status_output(out)
            except StatusCutShort:  # killed as the container stopped, maybe after saying "exited 0": ask again
                problem, stopping = f"exit code {code}: the output was cut short", True
                continue
            except ValueError:  # killed (137) as the container stopped, or the command itself failed
                problem, stopping = f"exit code {code}: {out.strip()[-200:]}", code == 137 and not out.strip()
                continue
            # the container runs, so the harness's supervisor does until it has written its exit code
            progress = replace(remote, alive=remote.exit_code_text is None).progress()
            return stopped_from_outside(progress, cancel_requested=remote.cancel_requested, who=OUTSIDE_STOPPERS)
        if stopping:  # the next poll finds it stopped
            last = self._last.get(handle.run_dir, RunProgress())
            return replace(last, state=RUNNING, message=f"container {container.name} is stopping")
        raise DockerRunnerError(
            f"node {self.node}: the status command in {container.name} failed ({problem}); does the image have a POSIX sh?"
        )

    def _stopped_progress(self, container: Any, handle: RunHandle) -> RunProgress:
        """A container that has exited: the run folder's files, or the engine's account of how it ended."""
        run_dir = handle.run_dir
        exit_text = self._read(container, f"{run_dir}/{EXIT_CODE}")
        cancelled = self._read(container, f"{run_dir}/{CANCEL_REQUESTED}") is not None
        progress_text = self._read(container, f"{run_dir}/{PROGRESS}", limit=16384)
        progress = progress_from_texts(progress_text, exit_text, alive=False, cancel_requested=cancelled)
        progress = stopped_from_outside(progress, cancel_requested=cancelled, who=OUTSIDE_STOPPERS)
        if exit_text is None or not exit_text.strip():
            state = container.attrs.get("State", {})
            code = state.get("ExitCode")
            oom = bool(state.get("OOMKilled"))
            why = " (the kernel's OOM killer)" if oom else (" (SIGKILL: out of memory or killed)" if code == 137 else "")
            error = f"; the engine says: {state['Error']}" if state.get("Error") else ""
            message = (
                f"container {container.name} ended with exit code {code}{why} before the harness recorded an exit "
                f"code{error}"
            )
            if cancelled:
                progress = replace(progress, state=CANCELLED, exit_code=code)
            else:
                progress = replace(progress, state=FAILED, exit_code=code, message=message)
        return progress

    # ---- collect, cancel, logs
    def collect(self, handle: RunHandle, dest_dir: str | Path) -> Path:
        container = self._container(handle)
        dest = Path(dest_dir).resolve()
        root = PurePosixPath(handle.run_dir).name
        with tempfile.TemporaryFile() as spool:

            def fetch() -> None:
                chunks, _ = container.get_archive(handle.run_dir, chunk_size=1 << 20)
                for chunk in chunks:
                    spool.write(chunk)

            try:
                self._api(f"copying {handle.run_dir} out", fetch)
            except docker.errors.NotFound:
                raise ContainerGone(
                    f"node {self.node}: {handle.run_dir} is missing in container {container.name}; nothing to collect"
                ) from None
            spool.seek(0)
            with replacing_folder(dest) as tmp, tarfile.open(fileobj=spool, mode="r:") as tar:
                members = []
                for member in tar.getmembers():
                    name = PurePosixPath(member.name)
                    if name.parts[:1] != (root,) or len(name.parts) == 1:
                        continue
                    member.name = str(PurePosixPath(*name.parts[1:]))
                    members.append(member)
                try:
                    tar.extractall(tmp, members=members, filter="data")
                except tarfile.FilterError as exc:  # a link out of the folder, a device file: nothing lands outside
                    raise DockerRunnerError(
                        f"node {self.node}: the run folder {handle.run_dir} in container {container.name} holds "
                        f"{_refused_member(exc)}; not collected"
                    ) from None
                if not (tmp / RUN_SPEC).is_file():
                    raise DockerRunnerError(f"node {self.node}: the copy of {handle.run_dir} has no {RUN_SPEC}")
        return dest

    def cancel(self, handle: RunHandle) -> None:
        try:
            container = self._container(handle)
        except ContainerGone:
            return
        if container.status == "created":  # never started: nothing ran, nothing to keep
            self._remove(container)
            return
        if container.status not in ("running", "paused", "restarting"):
            return
        marker = _tar_of([(f"{handle.run_dir}/{CANCEL_REQUESTED}", f"{time.time()}\n".encode())], [])
        try:
            self._api("marking the run cancelled", lambda: container.put_archive("/", marker))
            self._api("signalling the container", lambda: container.kill(signal="SIGTERM"))
        except (EngineRefused, docker.errors.NotFound):
            pass  # it stopped meanwhile
        finally:
            marker.close()
        if not self._wait_stopped(container, self.cancel_grace_s):
            try:
                self._api("killing the container", lambda: container.kill(signal="SIGKILL"))
            except (EngineRefused, docker.errors.NotFound):
                pass
            self._wait_stopped(container, 10.0)

    def _wait_stopped(self, container: Any, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while True:
            try:
                self._api("reading the container", container.reload)
            except docker.errors.NotFound:
                return True
            if container.status not in ("running", "paused", "restarting"):
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)

    def _remove(self, container: Any) -> None:
        try:
            container.remove(force=True, v=True)
        except Exception:  # noqa: BLE001 - gone already, or the engine refuses: nothing more to do here
            pass

    def log_tail(self, handle: RunHandle, lines: int = 20) -> str:
        try:
            container = self._container(handle)
            text = self._read(container, f"{handle.run_dir}/{RUNNER_LOG}", limit=64 * 1024)
            if not text:  # the harness never started: what the container printed (python missing, ...)
                text = self._api("reading the container's log", lambda: container.logs(tail=lines)).decode(errors="replace")
        except RunnerError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def discard(self, handle: RunHandle) -> None:
        try:
            container = self._container(handle)
        except RunnerError:
            return
        self._remove(container)

    def stop_hint(self, handle: RunHandle) -> str:
        name = handle.extra.get("name") or container_name(handle.node, handle.run_id, handle.mode)
        return f"stop it on {self.engine} (docker stop {name})"

    # ---- monitoring
    def active_runs(self) -> list[tuple[RunHandle, RunProgress]]:
        """The node's run containers that have not exited, with their progress (for ``monitor``)."""
        out = []
        for item in self._list([f"{LABEL}.component={COMPONENT_RUN}", f"{LABEL}.node={self.node}"]):
            if item.get("State") not in LIVE_STATES:
                continue
            labels = item.get("Labels") or {}
            run_id, mode = labels.get(f"{LABEL}.run-id", ""), labels.get(f"{LABEL}.mode", "")
            name = (item.get("Names") or [""])[0].lstrip("/")
            handle = RunHandle(
                run_id=run_id,
                node=self.node,
                run_dir=f"{self.workdir}/{run_id}/{mode}",
                scenario=labels.get(f"{LABEL}.scenario", ""),
                mode=mode,
                extra={"container": item["Id"], "name": name, "engine": self.engine},
            )
            try:
                out.append((handle, self.poll(handle)))
            except RunGone:
                continue  # removed since the listing
            except RunnerError as exc:
                out.append((handle, RunProgress(state=RUNNING, message=str(exc))))
        return out


def _refused_member(exc: tarfile.FilterError) -> str:
    """What ``tarfile``'s ``data`` filter refused, in words: ``a link to an absolute path (evil_abs)``."""
    name = getattr(exc.tarinfo, "name", "?")
    if isinstance(exc, tarfile.AbsoluteLinkError):
        return f"a link to an absolute path ({name})"
    if isinstance(exc, tarfile.LinkOutsideDestinationError):
        return f"a link that points outside it ({name})"
    if isinstance(exc, tarfile.SpecialFileError):
        return f"a device or other special file ({name})"
    return f"an entry that may not be copied out ({name}: {type(exc).__name__})"


def _explain(exc: BaseException) -> str:
    """One line from a Docker SDK, requests or transport error."""
    explanation = getattr(exc, "explanation", None)
    if explanation:
        text = explanation.decode(errors="replace") if isinstance(explanation, bytes) else str(explanation)
    else:
        text = str(exc) or type(exc).__name__
    text = re.sub(r"\s+", " ", text).strip()
    return text[:300]


__all__ = [
    "ContainerGone",
    "DockerRunner",
    "DockerRunnerError",
    "DockerUnreachable",
    "EngineRefused",
    "FORWARDER_CODE",
    "HARNESS_VERSION_CODE",
    "HarnessMismatch",
    "ImageError",
    "build_container_spec",
    "check_container_name",
    "container_name",
    "gpu_device_requests",
    "spec_yaml",
]
