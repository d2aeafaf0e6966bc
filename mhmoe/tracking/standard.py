"""MLflow's own conventions, filled in: source tags and the experiment description.

MLflow's UI shows ``mlflow.source.*`` and ``mlflow.user`` in its Source / User columns and an
experiment's ``mlflow.note.content`` as its description. MLflow resolves user and source itself
(:func:`mlflow.tracking.context.registry.resolve_tags`); it finds no git commit for a console
script, so the commit of the mhmoe checkout is added.
"""

from __future__ import annotations

from mhmoe.tracking.names import TAG_DESCRIPTION

EXPERIMENT_DESCRIPTION = (
    "mhmoe training runs. A plain run has tag `mhmoe.role=train`; a sweep has one parent run "
    "(`mhmoe.role=sweep`) holding per-variant means over seeds (a table in its description), the best "
    "point and point counts, with one child run per grid point (`mhmoe.role=trial`). Each run logs "
    "`train/*`, `val/<set>/{loss,ppl}`, `perf/*` and `routing/*` metrics, its resolved config as params "
    "and `config.yaml`, expert-load matrices under `routing/`, and its final checkpoint under `checkpoint/` "
    "(`train.log_checkpoint`)."
)


def source_tags(git_commit: str) -> dict[str, str]:
    """``mlflow.user``, ``mlflow.source.name``/``type`` as MLflow resolves them, plus the git commit."""
    from mlflow.tracking.context.registry import resolve_tags
    from mlflow.utils.mlflow_tags import MLFLOW_GIT_COMMIT

    tags = {k: str(v) for k, v in resolve_tags().items()}
    if git_commit and git_commit != "unknown":
        tags[MLFLOW_GIT_COMMIT] = git_commit
    return tags


def describe_experiment(client, experiment_id: str) -> None:  # noqa: ANN001 - an MlflowClient
    """Set the experiment's description unless someone already wrote one."""
    if TAG_DESCRIPTION not in client.get_experiment(experiment_id).tags:
        client.set_experiment_tag(experiment_id, TAG_DESCRIPTION, EXPERIMENT_DESCRIPTION)


__all__ = ["EXPERIMENT_DESCRIPTION", "describe_experiment", "source_tags"]
