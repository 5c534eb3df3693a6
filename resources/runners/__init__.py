"""Benchmark runners: one interface (``base.BenchmarkRunner``), one implementation per ``runner:`` kind.

``build_runner(node, config)`` turns a config node into its runner resource. A runner kind maps to
``"module:Class"``; the class provides ``from_node_config(node, config)``. Runner modules are imported
only when a node uses them, so the local runner works without paramiko or the kubernetes client.
"""

from __future__ import annotations

import importlib
from typing import Any

from .base import (
    CANCELLED,
    FAILED,
    RUNNING,
    SUCCEEDED,
    BenchmarkRunner,
    RunHandle,
    RunnerError,
    RunProgress,
    RunSpec,
    progress_from_texts,
    runner_resource_key,
    wrapped_argv,
)
from .local import LocalRunner

RUNNER_CLASSES: dict[str, str] = {
    "local": "resources.runners.local:LocalRunner",
    "ssh": "resources.runners.ssh:SSHRunner",
    "kubernetes": "resources.runners.kubernetes:KubernetesRunner",
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

    reason: str

    def start(self, spec: RunSpec) -> RunHandle:
        raise RunnerError(f"node {self.node}: {self.reason}")

    def poll(self, handle: RunHandle) -> RunProgress:
        raise RunnerError(f"node {self.node}: {self.reason}")

    def collect(self, handle: RunHandle, dest_dir) -> Any:
        raise RunnerError(f"node {self.node}: {self.reason}")

    def cancel(self, handle: RunHandle) -> None:
        return None


def build_runner(node: Any, config: Any) -> BenchmarkRunner:
    """The runner resource for one config node (``config.NodeConfig``) of a loaded ``config.MlperfConfig``.
    A runner kind whose module is missing gives an :class:`UnavailableRunner` (fails when used)."""
    try:
        cls = runner_class(node.runner)
    except RunnerError as exc:
        return UnavailableRunner(node=node.name, reason=str(exc))
    return cls.from_node_config(node, config)


__all__ = [
    "BenchmarkRunner",
    "LocalRunner",
    "RunHandle",
    "RunProgress",
    "RunSpec",
    "RunnerError",
    "RUNNER_CLASSES",
    "UnavailableRunner",
    "RUNNING",
    "SUCCEEDED",
    "FAILED",
    "CANCELLED",
    "build_runner",
    "progress_from_texts",
    "runner_class",
    "runner_resource_key",
    "wrapped_argv",
]
