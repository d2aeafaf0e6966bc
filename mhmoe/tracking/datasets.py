"""The run's corpus and validation sets as MLflow dataset inputs (the run page's Datasets panel).

Each carries the source's content fingerprint (the same one that keys the token caches), so two
runs trained on the same bytes show the same digest, and its size in tokens of the run's tokenizer.
"""

from __future__ import annotations

import json

DIGEST_CHARS = 16  # MLflow stores at most 36 characters of a dataset digest
CONTEXT_TRAIN = "training"
CONTEXT_VAL = "validation"


def dataset_inputs(data, train_tokens: int, val_tokens: dict[str, int], tokenizer_spec: str) -> list:  # noqa: ANN001
    """``DatasetInput`` entities for ``data`` (a DataConfig): the corpus, then each validation set."""
    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    from mhmoe.data.sources import train_source, val_sources

    def entry(name: str, source, tokens: int, context: str):  # noqa: ANN001
        dataset = Dataset(name=name, digest=source.fingerprint[:DIGEST_CHARS], source_type="mhmoe",
                          source=json.dumps({"spec": source.spec}),
                          profile=json.dumps({"tokens": int(tokens), "tokenizer": tokenizer_spec}))
        return DatasetInput(dataset=dataset, tags=[InputTag(MLFLOW_DATASET_CONTEXT, context)])

    out = [entry("corpus", train_source(data), train_tokens, CONTEXT_TRAIN)]
    for name, source in val_sources(data).items():
        out.append(entry(f"val/{name}", source, val_tokens.get(name, 0), CONTEXT_VAL))
    return out


__all__ = ["dataset_inputs"]
