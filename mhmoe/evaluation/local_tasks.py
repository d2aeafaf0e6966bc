"""The tasks mhmoe ships: YAML templates in ``mhmoe/evaluation/tasks/`` rendered into the mhmoe home.

lm-eval hands ``dataset_kwargs.data_files`` to ``datasets``, which resolves relative paths against
the working directory, so the shipped YAMLs are templates: ``@PACKAGE_DATA@`` becomes the absolute
folder of the shipped JSON Lines (wherever the package is installed) and ``@HOME_DATA@`` the data
folder in the mhmoe home, where corpus-derived data is built on first use. ``@DATASETS_CACHE@``
(``home/huggingface/datasets``) keeps the ``datasets`` cache in the home even when the library was
imported before ``HF_HOME`` could be set.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from mhmoe.store.home import home_subdir

TEMPLATE_DIR = Path(__file__).resolve().parent / "tasks"
PACKAGE_DATA = "@PACKAGE_DATA@"
HOME_DATA = "@HOME_DATA@"
DATASETS_CACHE = "@DATASETS_CACHE@"
HELDOUT_TASK = "mhmoe_heldout_ppl"


def local_task_names() -> list[str]:
    """Names of the shipped tasks (one template ``<name>.yaml`` each), sorted."""
    return sorted(p.stem for p in TEMPLATE_DIR.glob("*.yaml"))


def tasks_dir() -> Path:
    """Where rendered task YAMLs live: ``home/eval/tasks``."""
    return home_subdir("eval", "tasks")


def data_dir() -> Path:
    """Where corpus-derived task data lives: ``home/eval/data``."""
    return home_subdir("eval", "data")


def _write_if_changed(path: Path, text: str) -> None:
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def render_local_tasks(build_data_for: set[str] | frozenset[str] = frozenset()) -> Path:
    """Render every template into :func:`tasks_dir` and build the data of the named tasks; return the dir.

    Corpus-derived data is built only when asked for, so listing or running other tasks never
    fetches the corpus.
    """
    out = tasks_dir()
    for template in sorted(TEMPLATE_DIR.glob("*.yaml")):
        text = template.read_text(encoding="utf-8")
        for placeholder, value in ((PACKAGE_DATA, TEMPLATE_DIR), (HOME_DATA, data_dir()),
                                   (DATASETS_CACHE, home_subdir("huggingface", "datasets"))):
            text = text.replace(placeholder, value.as_posix())
        _write_if_changed(out / template.name, text)
    if HELDOUT_TASK in build_data_for:
        from mhmoe.evaluation.heldout import write_heldout_jsonl

        write_heldout_jsonl(data_dir() / f"{HELDOUT_TASK}.jsonl")
    return out
