"""Checks of a validated config that involve several fields, the backend or the file system, found before anything
runs: node names, the dataset path, SSH timings, each node's parallelism (asked of the planner), the engine
arguments (asked of the backend, as the node will), the storage paths, and what a submission needs."""

from __future__ import annotations

import errno
import os
import stat as statmod
from pathlib import Path
from typing import Any

from mlperf_assets.config.models import BenchmarkConfig, MlperfConfig
from mlperf_assets.config.nodes import LocalNode, SSHNode, runner_resource_key
from mlperf_assets.harness.backends import BACKENDS as BACKEND_ROWS
from mlperf_assets.plan import compliance_tests, resolve_parallelism, submission_rule_problems


def cross_checks(config: MlperfConfig) -> list[tuple[str, str]]:
    """Problems that involve several fields or the file system: (field path, message)."""
    problems: list[tuple[str, str]] = []
    seen: dict[str, int] = {}
    keys: dict[str, int] = {}
    for i, node in enumerate(config.nodes):
        if node.name in seen:
            problems.append((f"nodes[{i}].name", f"duplicate node name {node.name!r} (also nodes[{seen[node.name]}])"))
            continue
        key = runner_resource_key(node.name)
        if key in keys:
            other = config.nodes[keys[key]].name
            problems.append((f"nodes[{i}].name", f"{node.name!r} and {other!r} differ only in '.'/'-'/'_'; rename one"))
        seen[node.name] = i
        keys[key] = i
    ds = config.dataset
    if ds.source != "huggingface" and ds.path is None:
        problems.append(("dataset.path", f"is required when source is {ds.source!r}"))
    if ds.path is not None and config.dataset_overridden_by is None:
        if ds.source == "stories" and not ds.path.is_dir():
            problems.append(("dataset.path", f"{ds.path} is not a folder of .story files"))
        elif ds.source != "stories" and not ds.path.exists():
            problems.append(("dataset.path", f"{ds.path} does not exist"))
    for i, node in enumerate(config.nodes):
        if isinstance(node, SSHNode):
            if node.reconnect_backoff_max_s > node.reconnect_timeout_s:
                longer = f"{node.reconnect_backoff_max_s:g} s is longer than reconnect_timeout_s"
                problems.append((f"nodes[{i}].reconnect_backoff_max_s", f"{longer} ({node.reconnect_timeout_s:g} s)"))
            seen_env: set[str] = set()
            for j, name in enumerate(node.forward_env):
                if name in seen_env:
                    problems.append((f"nodes[{i}].forward_env[{j}]", f"{name!r} is listed twice"))
                seen_env.add(name)
    for i, node in enumerate(config.nodes):
        try:
            resolve_parallelism(config.benchmark, node)
        except ValueError as exc:
            problems.append((f"nodes[{i}].gpus", str(exc)))
    if BACKEND_ROWS[config.benchmark.backend].checkpoint_arg and not config.benchmark.checkpoint:
        problems.append(("benchmark.checkpoint", f"is required for the {config.benchmark.backend} backend"))
    elif (engine_problem := _engine_problem(config.benchmark)) is not None:
        problems.append(("benchmark.engine", engine_problem))
    problems += _storage_problems(config)
    problems += _submission_problems(config)
    problems += submission_rule_problems(config)
    problems += _schedule_problems(config)
    problems += _endpoints_problems(config)
    return problems


def _endpoints_problems(config: MlperfConfig) -> list[tuple[str, str]]:
    """The endpoints: block's node, and what the Endpoints planner refuses before anything runs."""
    ep = config.endpoints
    if ep is None:
        return []
    if ep.node is not None and ep.node not in config.node_names:
        return [("endpoints.node", f"{ep.node!r} is not a node of this config ({', '.join(config.node_names)})")]
    from mlperf_assets.endpoints.plan import config_problem

    problem = config_problem(ep)
    if problem is None:
        return []
    field, _, text = problem.partition(": ") if problem.startswith("endpoints.") else ("endpoints", "", problem)
    return [(field, text)]


def _schedule_problems(config: MlperfConfig) -> list[tuple[str, str]]:
    """Scenarios whose settings (as the profile passes them on) schedule more queries than LoadGen can hold."""
    from mlperf_assets.harness.settings import schedule_problem
    from mlperf_assets.plan import profile_settings

    problems: list[tuple[str, str]] = []
    for name, settings in config.benchmark.scenarios.enabled().items():
        problem = schedule_problem(name, profile_settings(config, settings.as_settings()))
        if problem:
            problems.append((f"benchmark.scenarios.{name}", problem))
    return problems


def _submission_problems(config: MlperfConfig) -> list[tuple[str, str]]:
    """A submission block missing what a machine cannot know (one line each); an MLCommons checkout that is not
    one; TEST06 without a checkout to take its audit.config from."""
    problems: list[tuple[str, str]] = []
    if config.submission is not None:
        for name in config.submission.missing_fields():
            problems.append((f"submission.{name}", "is required for a submission (a machine cannot report it)"))
        problems += _submission_root_problems(config)
    root = config.mlcommons_inference
    if root is not None:
        if not root.is_dir():
            problems.append(("mlcommons_inference", f"{root} does not exist (a checkout of mlcommons/inference)"))
        elif not (root / "tools/submission/submission_checker/main.py").is_file():
            problems.append(("mlcommons_inference", f"{root} has no tools/submission/submission_checker/main.py"))
    problems += _compliance_problems(config)
    tests = compliance_tests(config)
    if tests and root is None:
        problems.append(("mlcommons_inference", f"is required for {', '.join(tests)} "
                                                f"(its compliance/{tests[0]}/audit.config)"))
    return problems


def _submission_root_problems(config: MlperfConfig) -> list[tuple[str, str]]:
    """No storage path may be or lie inside the submission trees' folder (<artifact_root>/../submission): each tree
    replaces its folder."""
    root = Path(os.path.realpath(config.storage.submission_root))
    for field in ("artifact_root", "duckdb_path", "report_dir", "dataset_dir"):
        path = getattr(config.storage, field)
        if path is None:
            continue
        path = Path(os.path.realpath(path))
        if path == root or root in path.parents:
            return [(f"storage.{field}", f"{path} is or lies inside {root}, where submission trees are written (the folder "
                                         "submission/ beside the artifact root); move it elsewhere")]
    return []


def _compliance_problems(config: MlperfConfig) -> list[tuple[str, str]]:
    """benchmark.compliance tests that the benchmark's LoadGen model does not take (its registry row's
    ``compliance_tests``: the checker's models_TESTxx lists), refused before a run spends its time on them."""
    from mlperf_assets.harness.benchmarks import BENCHMARKS, LOADGEN_MODELS

    bench = config.benchmark
    model = LOADGEN_MODELS.get(bench.lg_model_name or BENCHMARKS[bench.model].default_lg_model_name)
    if model is None:
        return []
    return [("benchmark.compliance", f"{test} does not apply to {model.name} (a {model.submission_name} submission "
                                     f"takes {', '.join(model.compliance_tests) or 'no compliance test'})")
            for test in dict.fromkeys(bench.compliance) if test not in model.compliance_tests]


def _engine_problem(benchmark: BenchmarkConfig) -> str | None:
    """Why the backend would refuse an entry of the ``engine:`` mapping, asked of the backend itself (``from_args``,
    the check the harness makes on the node) with the arguments exactly as the node gets them (``--engine-arg
    KEY=VALUE``). Cheap: no backend library is imported. Only what the entries cause is reported here (the backend
    accepts the same call without them); a required argument left out, and vLLM's own engine arguments (known only
    with vLLM installed), are reported by the harness when the run starts."""
    from mlperf_assets.harness.backends import backend_class
    from mlperf_assets.harness.backends.base import BackendArgs, format_key_value, parse_key_values
    from mlperf_assets.harness.errors import HarnessError

    def refusal(engine: dict[str, Any]) -> str | None:
        model_key = BACKEND_ROWS[benchmark.backend].checkpoint_arg
        if model_key and benchmark.checkpoint and model_key not in engine:
            engine = {**engine, model_key: benchmark.checkpoint}
        try:
            as_sent = parse_key_values([format_key_value(str(k), v) for k, v in engine.items()], "--engine-arg")
            backend_class(benchmark.backend).from_args(BackendArgs(engine_args=as_sent))
        except HarnessError as exc:
            return str(exc)
        except (ValueError, TypeError) as exc:
            return f"the {benchmark.backend} backend refuses it: {exc}"
        return None

    if not benchmark.engine:
        return None
    problem = refusal(dict(benchmark.engine))
    return problem if problem is not None and refusal({}) is None else None


def _storage_problems(config: MlperfConfig) -> list[tuple[str, str]]:
    """Storage paths the orchestrator could not use, found before anything runs: the DuckDB file must be a file
    (or creatable) and writable; the folders must be folders (or creatable)."""
    s = config.storage
    problems: list[tuple[str, str]] = []
    db_problem = _path_problem(s.duckdb_path, folder=False)
    if db_problem:
        problems.append(("storage.duckdb_path", db_problem))
    for field in ("artifact_root", "report_dir", "dataset_dir"):
        path = getattr(s, field)
        problem = _path_problem(path, folder=True) if path is not None else None
        if problem:
            problems.append((f"storage.{field}", problem))
    for i, node in enumerate(config.nodes):
        if isinstance(node, LocalNode) and node.workdir is not None:
            problem = _path_problem(node.workdir, folder=True)
            if problem:
                problems.append((f"nodes[{i}].workdir", problem))
    return problems


def _path_problem(path: Path, *, folder: bool) -> str | None:
    """Why ``path`` cannot be used as a folder (``folder``) or as the DuckDB file, or None. A path that does not
    exist yet is fine if its nearest existing parent is a folder this process may write in."""
    kind = "a folder" if folder else "a DuckDB file such as results/mlperf.duckdb"
    try:
        st = path.stat()
    except (FileNotFoundError, NotADirectoryError):  # not there yet (or below a file: said below)
        st = None
    except OSError as exc:  # a symlink loop, a component that is a file, a name too long
        reason = "a symbolic link loop" if exc.errno == errno.ELOOP else (exc.strerror or str(exc))
        return f"{path} cannot be used: {reason}"
    if st is not None:
        if folder and not statmod.S_ISDIR(st.st_mode):
            return f"{path} is a file, not a folder"
        if folder:
            return None if os.access(path, os.W_OK | os.X_OK) else f"{path} is not writable by this user"
        if statmod.S_ISDIR(st.st_mode):
            return f"{path} is a folder; give {kind}"
        if not statmod.S_ISREG(st.st_mode):
            return f"{path} is not a regular file (a device, pipe or socket); give {kind}"
        if not os.access(path, os.R_OK | os.W_OK):
            return f"{path} is not writable by this user"
        with open(path, "rb") as f:  # DuckDB opens only its own files (bytes 8-11 "DUCK"), not even an empty one
            if f.read(12)[8:12] != b"DUCK":
                return f"{path} is not a DuckDB database; give a new file name or an existing results store"
        return None
    parent = path.parent
    while True:
        try:
            parent_st = parent.stat()
            break
        except (FileNotFoundError, NotADirectoryError):
            if parent == parent.parent:
                return f"{path} cannot be created: no existing parent folder"
            parent = parent.parent
        except OSError as exc:
            reason = "a symbolic link loop" if exc.errno == errno.ELOOP else (exc.strerror or str(exc))
            return f"{path} cannot be created: {parent}: {reason}"
    if not statmod.S_ISDIR(parent_st.st_mode):
        return f"{path} cannot be created: {parent} is a file, not a folder"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"{path} cannot be created: {parent} is not writable by this user"
    return None
