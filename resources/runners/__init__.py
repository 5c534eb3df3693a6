"""Benchmark runners: one interface (``base.BenchmarkRunner``), one implementation per ``runner:`` kind.

``build_runner(node)`` turns a config node model into its runner. A runner kind maps to ``"module:Class"``; the
class is built from the node model itself (its fields and defaults live only in ``mlperf_assets/config/nodes.py``).
Runner modules are imported only when a node uses them, so the local runner works without paramiko or the
kubernetes client.
"""

from __future__ import annotations

import importlib
from typing import Any

from mlperf_assets.config import runner_resource_key

from .base import BenchmarkRunner, RunGone, RunHandle, RunnerError, RunUnreachable, wrapped_argv
from .local import LocalRunner

RUNNER_CLASSES: dict[str, str] = {
    "local": "resources.runners.local:LocalRunner",
    "ssh": "resources.runners.ssh:SSHRunner",
    "kubernetes": "resources.runners.kubernetes:KubernetesRunner",
    "docker": "resources.runners.docker:DockerRunner",
}


def runner_class(kind: str) -> type[BenchmarkRunner]:
    """The runner class for a ``runner:`` kind; RunnerError if it is unknown or not installed."""
    target = RUNNER_CLASSES.get(kind)
    if target is None:
        raise RunnerError(f"unknown runner kind {kind!r}; known: {', '.join(RUNNER_CLASSES)}")
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise RunnerError(f"the {kind} runner is not available ({exc})") from exc
    return getattr(module, class_name)


class UnavailableRunner(BenchmarkRunner):
    """Stands in for a runner kind whose module is not installed, so definitions still load; every call
    raises :class:`RunnerError` with ``reason``."""

    def __init__(self, settings: Any, reason: str) -> None:
        self.settings = settings
        self.reason = reason

    def _unavailable(self, *_: Any) -> Any:
        raise RunnerError(f"node {self.node}: {self.reason}")

    start = poll = collect = active_runs = render = _unavailable

    def cancel(self, handle: RunHandle) -> None:
        return None


def build_runner(node: Any, config: Any = None) -> BenchmarkRunner:
    """The runner for one config node model (``config.NodeConfig`` of a loaded config: loading fills in the
    defaults that depend on other sections, such as a local node's workdir; ``config`` itself is not needed).
    A runner kind whose module is missing gives an :class:`UnavailableRunner` (fails when used)."""
    try:
        cls = runner_class(node.runner)
    except RunnerError as exc:
        return UnavailableRunner(node, str(exc))
    return cls(node)


__all__ = [
    "BenchmarkRunner",
    "LocalRunner",
    "RunGone",
    "RunHandle",
    "RunUnreachable",
    "RunnerError",
    "RUNNER_CLASSES",
    "UnavailableRunner",
    "build_runner",
    "runner_class",
    "runner_resource_key",
    "wrapped_argv",
]
