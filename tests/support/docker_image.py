"""A Docker engine and harness images for the Docker runner's tests, built here with no registry (nothing can be
pulled on these machines: ../shared/reference/docker_notes.md).

Engine: the one at ``$DOCKER_HOST`` or ``/var/run/docker.sock`` when it answers; otherwise :class:`Dockerd` starts
Debian's ``dockerd --bridge=none --iptables=false`` (as root; no bridge network: containers use ``host`` or ``none``)
with the default data root, so images built by one test session are still there for the next, and stops it after.

Images, each tagged by a hash of what went into it, so a rerun finds it and builds nothing:

1. ``mlperf-dagster-test-rootfs:<hash>``: ``debootstrap --variant=minbase bookworm`` with python3 and python3-venv,
   from the machine's configured Debian mirror, imported as an image (about 50 s, once; cleaned of .debs and docs);
2. ``mlperf-dagster-test-node:<hash>``: + a venv in ``/opt/venv`` (first on PATH) holding the harness's dependencies
   (the project's base and ``[node]`` requirements from pyproject.toml), installed from wheels ``pip download``-ed on
   the host into the build context, with the build's network off (about 15 s). No harness: runs mount the source
   (the node's ``harness_source``), which is how an image without our harness is used;
3. ``mlperf-dagster-test-harness:<hash>``: docker/Dockerfile itself, built with the node image in place of vLLM's
   and this checkout as a wheel built here (``pip wheel``): a few seconds; the hash covers the package's source.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
ROOTFS_REPO = "mlperf-dagster-test-rootfs"
NODE_REPO = "mlperf-dagster-test-node"
HARNESS_REPO = "mlperf-dagster-test-harness"
SUITE = "bookworm"
ROOTFS_PACKAGES = "python3,python3-venv"
RECIPE = "2"  # bump to rebuild every image
LOCK = Path(tempfile.gettempdir()) / "mlperf-dagster-test-image.lock"
DEFAULT_SOCKET = "unix:///var/run/docker.sock"


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:12]


def log(message: str) -> None:
    print(f"[docker image] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------ the engine
def ping(base_url: str) -> bool:
    import docker

    try:
        client = docker.DockerClient(base_url=base_url, timeout=10, version="auto")
    except Exception:  # noqa: BLE001 - not answering, in whatever way
        return False
    try:
        return bool(client.ping())
    except Exception:  # noqa: BLE001
        return False
    finally:
        client.close()


def engine_unavailable() -> str | None:
    """None when a Docker engine answers or one can be started here, else why not."""
    if ping(os.environ.get("DOCKER_HOST") or DEFAULT_SOCKET):
        return None
    if os.environ.get("DOCKER_HOST"):
        return f"DOCKER_HOST={os.environ['DOCKER_HOST']} does not answer"
    if not shutil.which("dockerd"):
        return "dockerd is not installed (apt-get install -y docker.io)"
    if os.geteuid() != 0:
        return "no Docker engine answers and starting dockerd needs root"
    return None


class Dockerd:
    """The engine the tests use: an answering one, or ``dockerd`` started here (and stopped by :meth:`stop`)."""

    def __init__(self, log_file: Path) -> None:
        self.base_url = os.environ.get("DOCKER_HOST") or DEFAULT_SOCKET
        self.proc: subprocess.Popen | None = None
        self.log_file = log_file

    def start(self) -> "Dockerd":
        if ping(self.base_url):
            return self
        with open(self.log_file, "wb") as out:
            self.proc = subprocess.Popen(
                ["dockerd", "--bridge=none", "--iptables=false", "--ip-masq=false", "--host", self.base_url],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + 60
        while not ping(self.base_url):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                tail = self.log_file.read_text(errors="replace")[-2000:]
                self.stop()
                raise RuntimeError(f"dockerd did not come up:\n{tail}")
            time.sleep(0.3)
        return self

    def client(self):
        import docker

        return docker.DockerClient(base_url=self.base_url, timeout=300, version="auto")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


# ------------------------------------------------------------------------------------------------ the images
def _exists(client, ref: str) -> bool:
    import docker.errors

    try:
        client.images.get(ref)
        return True
    except docker.errors.ImageNotFound:
        return False


def debian_mirror() -> str:
    """The machine's configured Debian mirror for the main archive (deb822 or one-line format)."""
    override = os.environ.get("MLPERF_DAGSTER_TEST_DEBIAN_MIRROR")
    if override:
        return override
    for path in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        for stanza in path.read_text().split("\n\n"):
            uris = re.search(r"^URIs:\s*(\S+)", stanza, re.M)
            suites = re.search(r"^Suites:\s*(.+)$", stanza, re.M)
            if uris and suites and SUITE in suites.group(1).split() and "security" not in uris.group(1):
                return uris.group(1)
    for path in [Path("/etc/apt/sources.list"), *Path("/etc/apt/sources.list.d").glob("*.list")]:
        if path.is_file():
            for line in path.read_text().splitlines():
                m = re.match(r"deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+" + SUITE + r"\s", line)
                if m and "security" not in m.group(1):
                    return m.group(1)
    return "http://deb.debian.org/debian"


def rootfs_image(client) -> str:
    ref = f"{ROOTFS_REPO}:{SUITE}-{_digest(RECIPE, SUITE, ROOTFS_PACKAGES)}"
    if _exists(client, ref):
        return ref
    if not shutil.which("debootstrap"):
        raise RuntimeError("debootstrap is not installed (apt-get install -y debootstrap)")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="rootfs-", dir="/var/tmp") as tmp:
        rootfs = Path(tmp) / "rootfs"
        mirror = debian_mirror()
        log(f"debootstrap {SUITE} from {mirror} ...")
        done = subprocess.run(
            ["debootstrap", "--variant=minbase", f"--include={ROOTFS_PACKAGES}", SUITE, str(rootfs), mirror],
            capture_output=True, text=True,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"debootstrap failed ({done.returncode}):\n{(done.stdout + done.stderr)[-3000:]}")
        for junk in ("var/cache/apt/archives", "usr/share/doc", "usr/share/man", "usr/share/locale", "var/lib/apt/lists"):
            shutil.rmtree(rootfs / junk, ignore_errors=True)
        archive = Path(tmp) / "rootfs.tar"
        subprocess.run(["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(archive), "."], check=True)
        repository, tag = ref.split(":")
        client.api.import_image_from_file(str(archive), repository=repository, tag=tag)
    log(f"{ref} built in {time.monotonic() - started:.0f} s")
    return ref


def node_requirements() -> list[str]:
    """The harness's requirements: the project's base dependencies and its ``node`` extra (pyproject.toml)."""
    import tomllib

    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    return [*project["dependencies"], *project["optional-dependencies"]["node"]]


def _build(client, context: Path, dockerfile: str | None, ref: str, buildargs: dict[str, str] | None = None) -> None:
    if dockerfile is not None:
        (context / "Dockerfile").write_text(dockerfile)
    try:
        client.images.build(path=str(context), tag=ref, network_mode="none", rm=True, forcerm=True, pull=False,
                            buildargs=buildargs or {})  # fmt: skip
    except Exception as exc:  # noqa: BLE001 - docker.errors.BuildError carries the build log
        lines = [str(item.get("stream") or item.get("error") or "") for item in getattr(exc, "build_log", [])]
        raise RuntimeError(f"building {ref} failed: {exc}\n{''.join(lines)[-3000:]}") from None


def node_image(client) -> str:
    """Python + the harness's dependencies, no harness (runs mount the source)."""
    requirements = node_requirements()
    base = rootfs_image(client)
    ref = f"{NODE_REPO}:{_digest(RECIPE, base, *requirements)}"
    if _exists(client, ref):
        return ref
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="node-image-") as tmp:
        context = Path(tmp)
        wheels = context / "wheels"
        (wheels / "requirements.txt").parent.mkdir()
        (wheels / "requirements.txt").write_text("\n".join(requirements) + "\n")
        done = subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "--dest", str(wheels),
             "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311",
             "--platform", "manylinux_2_28_x86_64", "-r", str(wheels / "requirements.txt")],
            capture_output=True, text=True,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"pip download failed:\n{(done.stdout + done.stderr)[-3000:]}")
        _build(
            client,
            context,
            f"FROM {base}\n"
            "COPY wheels /tmp/wheels\n"
            "RUN python3 -m venv /opt/venv && /opt/venv/bin/pip install -q --no-index --no-cache-dir "
            "--disable-pip-version-check --find-links /tmp/wheels -r /tmp/wheels/requirements.txt && rm -rf /tmp/wheels\n"
            "ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n",
            ref,
        )
    log(f"{ref} built in {time.monotonic() - started:.0f} s")
    return ref


def _source_digest() -> str:
    h = hashlib.sha256((PROJECT_ROOT / "pyproject.toml").read_bytes())
    for folder in ("mlperf_assets", "resources", "jobs"):
        for path in sorted((PROJECT_ROOT / folder).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                h.update(str(path.relative_to(PROJECT_ROOT)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:12]


def harness_image(client) -> str:
    """docker/Dockerfile itself, built on the node image instead of vLLM's: this checkout installed from a wheel."""
    base = node_image(client)
    dockerfile = (PROJECT_ROOT / "docker" / "Dockerfile").read_text()
    ref = f"{HARNESS_REPO}:{_digest(RECIPE, base, dockerfile, _source_digest())}"
    if _exists(client, ref):
        return ref
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="harness-image-") as tmp:
        context = Path(tmp)
        done = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--wheel-dir",
             str(context / "dist"), str(PROJECT_ROOT)],
            capture_output=True, text=True,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"pip wheel failed:\n{(done.stdout + done.stderr)[-3000:]}")
        _build(client, context, dockerfile, ref, {"VLLM_IMAGE": base, "PIP_ARGS": "--no-index"})
    log(f"{ref} built in {time.monotonic() - started:.0f} s")
    for old in client.images.list(name=HARNESS_REPO):  # earlier checkouts' images: only the newest is reused
        if ref not in old.tags:
            try:
                client.images.remove(old.id, force=True)
            except Exception:  # noqa: BLE001 - in use by a container of a running test: left for next time
                pass
    return ref


def fake_source(folder: Path, version: str) -> Path:
    """A source tree whose harness says it is ``version`` (pyproject.toml + a copy of the package), for mounting as
    ``harness_source`` in version-mismatch tests."""
    shutil.copytree(PROJECT_ROOT / "mlperf_assets", folder / "mlperf_assets", ignore=shutil.ignore_patterns("__pycache__"))
    text = (PROJECT_ROOT / "pyproject.toml").read_text()
    (folder / "pyproject.toml").write_text(re.sub(r'(?m)^version\s*=\s*"[^"]+"', f'version = "{version}"', text, count=1))
    return folder


def build_all(client) -> dict[str, str]:
    """Every test image (serialized across processes by a file lock), as {"node": ref, "harness": ref}."""
    from filelock import FileLock

    with FileLock(str(LOCK)):
        return {"node": node_image(client), "harness": harness_image(client)}


def tar_bytes(files: dict[str, bytes]) -> bytes:
    """A tar of {name: content}, for ``put_archive`` in tests."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return out.getvalue()


if __name__ == "__main__":  # build (or find) the images: python tests/support/docker_image.py
    engine = Dockerd(Path(tempfile.gettempdir()) / "dockerd.log").start()
    try:
        t0 = time.monotonic()
        print(build_all(engine.client()), f"{time.monotonic() - t0:.0f} s")
    finally:
        engine.stop()
