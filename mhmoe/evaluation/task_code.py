"""Which user task YAMLs would make lm-eval run Python, decided the way lm-eval's YAML loader decides.

lm-eval reads task YAMLs with its own PyYAML loader (``lm_eval/tasks/_yaml_loader.py``) and
registers a constructor for the tag ``!function`` that imports a module from beside the YAML.
A search for the text ``!function`` misses other spellings the YAML parser resolves to the same
tag: a URI escape (``!%66unction``), a ``%TAG`` handle (``%TAG !e! !`` then ``!e!function``) and
the verbatim form (``!<!function>``). So each file is parsed here by a loader built on the same
base class, whose constructors record tags instead of acting on them: ``!function`` (registered as
lm-eval registers it) and, through a catch-all multi-constructor, every other tag outside YAML's
standard set (a ``python/...`` tag would build Python objects under a full loader). Whatever the
tag was spelled, the parser has already resolved it, so what is caught is what lm-eval would see.

Files are found as lm-eval finds them: every ``.yaml``/``.yml`` under a folder, files named
directly, and the files their ``include:`` key names (relative to the including file). A file
that does not parse is reported too: it cannot be shown to be free of code.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

FUNCTION_TAG = "!function"
"""The tag lm-eval constructs by importing and returning a Python function."""

LM_EVAL_BASE_LOADER = yaml.CSafeLoader if getattr(yaml, "__with_libyaml__", False) else yaml.FullLoader
"""The base lm-eval 0.4's loader derives from (same parser, so tags resolve as they do there)."""

STANDARD_CONSTRUCTORS = {tag: c for tag, c in yaml.SafeLoader.yaml_constructors.items() if tag is not None}
"""YAML's own tags (``tag:yaml.org,2002:str``, ``map``, ``int``, ...): plain data, never code."""

WRITTEN_TAG = re.compile(r"!<[^>]*>|![^\s,\[\]{}]*")
LINE_BREAK = re.compile(r"\r\n|\r|\n")


class TagRecorder(LM_EVAL_BASE_LOADER):  # type: ignore[misc,valid-type]
    """lm-eval's loader base with only YAML's standard constructors; any other tag is recorded, not built."""

    yaml_constructors = dict(STANDARD_CONSTRUCTORS)
    yaml_multi_constructors: dict[str, Any] = {}

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self.tagged: list[yaml.Node] = []


def _record(loader: TagRecorder, node: yaml.Node) -> None:
    """Note the node; construct nothing (``!function`` would import its module here)."""
    loader.tagged.append(node)


def _record_any(loader: TagRecorder, _suffix: str, node: yaml.Node) -> None:
    _record(loader, node)


TagRecorder.add_constructor(FUNCTION_TAG, _record)
TagRecorder.add_multi_constructor("", _record_any)  # "" prefixes every tag the standard ones leave


@dataclass(frozen=True)
class TaskCode:
    """One reason a task YAML may run code: a non-standard tag, or the file does not parse."""

    path: Path
    tag: str = ""
    """The tag as the parser resolved it (``!function``); empty when the file did not parse."""
    written: str = ""
    """The tag as written in the file (``!%66unction``)."""
    error: str = ""

    def describe(self) -> str:
        if self.error:
            return f"does not parse as YAML ({self.error}), so it cannot be checked for code"
        spelled = self.written if self.written == self.tag else f"{self.written}, which YAML reads as {self.tag}"
        if self.tag == FUNCTION_TAG:
            return f"uses {spelled} (lm-eval imports and runs Python from its folder)"
        return f"uses the non-standard YAML tag {spelled} (a YAML loader may build code from it)"


def _written(lines: list[str], node: yaml.Node) -> str:
    """The tag as it stands in the file at the node's start (after an anchor, if any)."""
    mark = node.start_mark
    if 0 <= mark.line < len(lines):
        match = WRITTEN_TAG.search(lines[mark.line], mark.column)
        if match:
            return match.group()
    return str(node.tag)


def _parse_error(err: Exception) -> str:
    """The parser's problem and line (its own message spans several lines), else the error's first line."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or next(iter(str(err).splitlines()), "") or type(err).__name__
    return f"{problem}, line {mark.line + 1}" if mark is not None else problem


def scan_yaml(path: Path) -> tuple[list[TaskCode], list[Path]]:
    """(what in the file may run code, the files its ``include:`` names), parsing as lm-eval does."""
    try:
        raw = path.read_bytes()
        loader = TagRecorder(raw)
        try:
            data = loader.get_single_data()
        finally:
            loader.dispose()
    except Exception as err:  # anything that stops the parse leaves the file unchecked
        return [TaskCode(path, error=_parse_error(err))], []
    lines = LINE_BREAK.split(raw.decode("utf-8", errors="replace"))
    found = [TaskCode(path, tag=str(node.tag), written=_written(lines, node)) for node in loader.tagged]
    include = data.get("include") if isinstance(data, dict) else None
    names = include if isinstance(include, list) else [include]
    # lm-eval: an absolute include as is, a relative one beside the including file.
    return found, [path.parent / name for name in names if isinstance(name, str)]


def yaml_files(paths: Sequence[Path]) -> list[Path]:
    """The files named and every ``.yaml``/``.yml`` under the folders named (lm-eval globs ``**/*.yaml``)."""
    out = []
    for path in paths:
        if path.is_dir():
            out += sorted(p for pattern in ("**/*.yaml", "**/*.yml") for p in path.glob(pattern) if p.is_file())
        else:
            out.append(path)
    return out


def task_code(paths: Sequence[Path]) -> list[TaskCode]:
    """Everything in the task YAMLs under ``paths`` (and what they include) that may run code, by file."""
    todo = list(reversed(yaml_files(paths)))
    seen: set[Path] = set()
    found: list[TaskCode] = []
    while todo:
        path = todo.pop().resolve()
        if path in seen or not path.is_file():
            continue
        seen.add(path)
        in_file, included = scan_yaml(path)
        found += in_file
        todo += reversed(included)
    return sorted(found, key=lambda f: str(f.path))


def code_running_yamls(paths: Sequence[Path]) -> list[Path]:
    """The task YAMLs under ``paths`` (and what they include) that may run code, each once."""
    return sorted({f.path for f in task_code(paths)})


def task_code_problem(paths: Sequence[Path], consent: str) -> str | None:
    """One line naming the first file that may run code, its tag as written and ``consent``; None if none."""
    found = task_code(paths)
    if not found:
        return None
    return f"task YAML {found[0].path} {found[0].describe()}; {consent} if you trust it"


__all__ = ["FUNCTION_TAG", "TaskCode", "code_running_yamls", "scan_yaml", "task_code", "task_code_problem"]
