"""Turn ``--tasks`` specs into loaded lm-eval tasks, indexing only what the specs need.

A spec is a task/group/tag name, a task YAML file, or a directory of task YAMLs (included, and
every task defined in it is run). The shipped mhmoe tasks and user directories are indexed alone
(``include_defaults=False``, milliseconds). Only when a name is not found there are lm-eval's
built-in tasks consulted: first just the folders whose YAMLs mention the name (a text scan, well
under a second), then, if that does not resolve it, the full built-in index (~16 s).

Loading a task loads its dataset, so this is where an unreachable hub shows up; it is reported as
one :class:`EvalError` line naming the dataset.

lm-eval's ``!function`` YAML tag imports and runs Python from beside the YAML. A task YAML the user
points to (a file, a directory, an include path, and what those include) may use it, however
spelled, only with ``allow_code`` (``--allow-task-code``, a spec's ``eval.allow_code``): a sweep
spec passed around must not run code in every worker just by naming a folder. The YAML parser
decides what is a ``!function`` (:mod:`mhmoe.evaluation.task_code`), not a text search. Shipped
and built-in tasks are trusted.
"""

from __future__ import annotations

import difflib
import importlib.util
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mhmoe.evaluation.hub import first_line, hub_is_offline
from mhmoe.evaluation.local_tasks import TEMPLATE_DIR, local_task_names, render_local_tasks
from mhmoe.evaluation.task_code import task_code_problem


class EvalError(RuntimeError):
    """Evaluation cannot run as asked (unknown task, dataset unavailable, no MLflow run); says why."""


@dataclass
class TaskSpecs:
    names: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    dirs: list[Path] = field(default_factory=list)


def parse_specs(specs: Sequence[str]) -> TaskSpecs:
    """Sort comma-split ``--tasks`` items into names, YAML files and directories."""
    out = TaskSpecs()
    for spec in (s.strip() for s in specs):
        if not spec:
            continue
        path = Path(spec).expanduser()
        if path.is_dir():
            out.dirs.append(path.resolve())
        elif path.suffix in (".yaml", ".yml"):
            if not path.is_file():
                raise EvalError(f"task file {spec} does not exist")
            out.files.append(str(path.resolve()))
        else:
            out.names.append(spec)
    if not (out.names or out.files or out.dirs):
        raise EvalError("no tasks given; name at least one (mhmoe eval --list-tasks shows the local ones)")
    return out


def builtin_task_roots(names: Sequence[str]) -> list[Path] | None:
    """Folders of lm-eval's built-in YAMLs that mention every name as task/group/tag; None if one is absent."""
    spec = importlib.util.find_spec("lm_eval.tasks")
    assert spec is not None and spec.origin is not None
    root = Path(spec.origin).parent
    alternatives = "|".join(re.escape(n) for n in names)
    # `task: x`, `group: x`, `tag: x` or a list item `- x` (tags and group members are lists).
    pattern = re.compile(rf"^\s*(?:-\s*|(?:task|group|tag):\s*)[\"']?({alternatives})[\"']?\s*$", re.MULTILINE)
    found: dict[str, set[Path]] = {}
    for yaml_path in root.rglob("*.yaml"):
        for match in pattern.finditer(yaml_path.read_text(encoding="utf-8", errors="ignore")):
            found.setdefault(match.group(1), set()).add(yaml_path.parent)
    if any(name not in found for name in names):
        return None
    roots = sorted(set().union(*found.values()))
    # A folder inside another root is indexed with it; listing it again would index its YAMLs twice.
    return [r for r in roots if not any(o != r and r.is_relative_to(o) for o in roots)]


def _manager(paths: list[Path], defaults: bool = False) -> Any:
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=[str(p) for p in paths], include_defaults=defaults)


def _top_level(loaded: dict[str, Any]) -> list[Any]:
    """Requested items from a TaskManager.load result: groups not nested in others, then ungrouped tasks."""
    children = {c for names in loaded["group_map"].values() for c in names}
    grouped = {t.task_name for g in loaded["groups"].values() for t in g.get_all_tasks()}
    groups = [g for name, g in loaded["groups"].items() if name not in children]
    return groups + [t for name, t in loaded["tasks"].items() if name not in grouped]


def _load(manager: Any, specs: list[str], standard: Sequence[str] = ()) -> list[Any]:
    """Build the tasks (and download their data); hub and missing-file failures become EvalError.

    ``standard`` names the requested lm-eval built-in tasks: the ones that can need the hub.
    """
    try:
        return _top_level(manager.load(specs))
    except ConnectionError as err:  # includes huggingface_hub's OfflineModeIsEnabled
        hint = ("the Hugging Face hub is offline by default; pass --online where it is reachable"
                if hub_is_offline() else "the Hugging Face hub is unreachable")
        raise EvalError(f"cannot load the dataset of {list(standard) or specs}: {first_line(err)}; {hint}, "
                        f"or use a local task ({', '.join(local_task_names())})") from None
    except FileNotFoundError as err:  # datasets' DatasetNotFoundError and missing data files
        raise EvalError(f"cannot load the data of {specs}: {first_line(err)}") from None


def tasks_in_dir(directory: Path) -> list[str]:
    names = _manager([directory]).all_subtasks
    if not names:
        raise EvalError(f"task directory {directory} defines no task YAML")
    return list(names)


TASK_CODE_CONSENT = "pass --allow-task-code (spec: eval.allow_code: true)"


def include_dirs(include_paths: Sequence[str | Path]) -> list[Path]:
    """``--include-path`` folders, resolved; one that is not a folder is an EvalError."""
    extra = [Path(p).expanduser().resolve() for p in include_paths]
    for path in extra:
        if not path.is_dir():
            raise EvalError(f"include path {path} is not a directory")
    return extra


def user_task_paths(specs: Sequence[str], include_paths: Sequence[str | Path] = ()) -> list[Path]:
    """The user's task folders and files that ``specs`` and ``include_paths`` name (names are not paths)."""
    parsed = parse_specs(specs)
    return [*include_dirs(include_paths), *parsed.dirs, *map(Path, parsed.files)]


def check_no_task_code(paths: Sequence[Path], allow_code: bool) -> None:
    """Refuse task YAMLs that may run code (see :mod:`mhmoe.evaluation.task_code`) unless ``allow_code``."""
    if allow_code:
        return
    problem = task_code_problem(paths, TASK_CODE_CONSENT)
    if problem:
        raise EvalError(problem)


def select_tasks(specs: Sequence[str], include_paths: Sequence[str | Path] = (), *,
                 allow_code: bool = False) -> tuple[Any, list[Any]]:
    """(TaskManager, loaded Task/Group objects) for ``simple_evaluate(tasks=..., task_manager=...)``."""
    check_no_task_code(user_task_paths(specs, include_paths), allow_code)
    parsed = parse_specs(specs)
    names = list(parsed.names)
    for directory in parsed.dirs:
        names += [n for n in tasks_in_dir(directory) if n not in names]
    local = _local_roots(render_local_tasks(build_data_for=set(names)), parsed, include_paths)
    manager = _manager(local)
    requested = names + parsed.files
    missing = [n for n in names if n not in manager.all_tasks]
    if not missing:
        return manager, _load(manager, requested)
    narrow = _narrow_manager(missing, local)
    if narrow is not None:
        try:
            return narrow, _load(narrow, requested, missing)
        except KeyError:  # a group whose members live outside the scanned folders
            pass
    full = _manager(local, defaults=True)
    _check_known(missing, full)
    return full, _load(full, requested, missing)


def check_task_names(specs: Sequence[str], include_paths: Sequence[str | Path] = ()) -> None:
    """Raise EvalError unless every task name in ``specs`` is an mhmoe task, a task the user's folders
    define or an lm-eval task, group or tag, resolved as :func:`select_tasks` does it (full built-in
    index only when the cheaper ones miss). Loads no task and writes nothing: the shipped templates are
    indexed where they are, not rendered into the home."""
    parsed = parse_specs(specs)
    if not parsed.names:  # files and folders name themselves
        return
    local = _local_roots(TEMPLATE_DIR, parsed, include_paths)
    missing = [n for n in parsed.names if n not in _manager(local).all_tasks]
    if missing and _narrow_manager(missing, local) is None:
        _check_known(missing, _manager(local, defaults=True))


def _local_roots(shipped: Path, parsed: TaskSpecs, include_paths: Sequence[str | Path]) -> list[Path]:
    # Later include paths override earlier ones: the user's folders win over the shipped tasks.
    return [shipped, *include_dirs(include_paths), *parsed.dirs]


def _narrow_manager(missing: list[str], local: list[Path]) -> Any | None:
    """A TaskManager over the local folders and the built-in folders that mention ``missing``, if it
    knows every one of them (None: only the full built-in index can tell)."""
    roots = builtin_task_roots(missing)
    if roots is None:
        return None
    narrow = _manager([*roots, *local])
    return narrow if all(n in narrow.all_tasks for n in missing) else None


def _check_known(missing: list[str], full: Any) -> None:
    """Raise EvalError for the names the full index does not know either, with close matches."""
    unknown = [n for n in missing if n not in full.all_tasks]
    if not unknown:
        return
    close = list(dict.fromkeys(m for n in unknown for m in difflib.get_close_matches(n, full.all_tasks, n=3)))
    hint = f"; close matches: {', '.join(close)}" if close else ""
    raise EvalError(f"unknown task(s) {unknown}: neither an mhmoe task ({', '.join(local_task_names())}) "
                    f"nor an lm-eval task, group or tag{hint}")
