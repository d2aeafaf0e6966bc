"""Where the sweep specs shipped with mhmoe are: ``experiments/`` in a checkout, ``mhmoe/experiments/`` installed.

The repository keeps its specs in the top-level ``experiments/`` folder; pyproject.toml installs that folder
as the ``mhmoe.experiments`` data folder of the distribution. A wheel install therefore finds them inside the
package; a checkout, and an editable install (which imports ``mhmoe`` from the checkout), beside it.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parents[1]  # the mhmoe package folder
INSTALLED_SPECS_DIR = _PACKAGE / "experiments"
CHECKOUT_SPECS_DIR = _PACKAGE.parent / "experiments"


def shipped_specs_dir() -> Path:
    """The folder that holds the shipped ``*.yaml`` specs (``smoke`` -> ``<dir>/smoke.yaml``)."""
    return INSTALLED_SPECS_DIR if INSTALLED_SPECS_DIR.is_dir() else CHECKOUT_SPECS_DIR
