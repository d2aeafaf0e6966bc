"""Load a trained checkpoint for inference: config, tokenizer and weights, nothing executable.

Checkpoints are read with ``torch.load(weights_only=True)`` only, so a tampered file cannot run
code; anything that is not an mhmoe training checkpoint is refused with :class:`CheckpointError`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from mhmoe.config.base import ConfigError
from mhmoe.config.run import RunConfig
from mhmoe.model import Transformer, build_model

if TYPE_CHECKING:  # load_checkpoint imports the tokenizer module only when it runs
    from mhmoe.data.tokenizer import TextTokenizer

STATE_PREFIX = "net."
DIGEST_KEY = "mhmoe_state_digest"


class CheckpointError(ValueError):
    """The file is missing, unreadable, unsafe or not an mhmoe checkpoint; says which."""


@dataclass
class LoadedCheckpoint:
    net: Transformer
    config: RunConfig
    tokenizer: TextTokenizer
    path: Path
    global_step: int


def state_digest(state_dict: dict[str, torch.Tensor]) -> str:
    """SHA-256 over every tensor's name, dtype, shape and bytes, in key order."""
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        tensor = state_dict[key].detach().to("cpu").contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def read_checkpoint(path: str | Path) -> dict:
    """The raw checkpoint dict, loaded safely, validated to be ours and unmodified."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure to parse means "not a safe checkpoint"
        # torch's message suggests weights_only=False, which we never do: keep only its first line.
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path} is not a safe, readable torch checkpoint "
                              f"({type(err).__name__}: {first[:200]})") from None
    if not isinstance(raw, dict) or "state_dict" not in raw or "config" not in raw.get("hyper_parameters", {}):
        raise CheckpointError(f"{path} is not an mhmoe training checkpoint (no state_dict / hyper_parameters.config)")
    if raw.get(DIGEST_KEY) != state_digest(raw["state_dict"]):
        raise CheckpointError(f"{path}: the weights do not match the digest written at save time "
                              "(modified or corrupted after saving)")
    return raw


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> LoadedCheckpoint:
    """Rebuild the model (BitNet conversion included) and its tokenizer from a checkpoint."""
    from mhmoe.data.tokenizer import load_tokenizer

    raw = read_checkpoint(path)
    hparams = raw["hyper_parameters"]
    try:
        config = RunConfig.from_dict(hparams["config"])
    except ConfigError as err:
        raise CheckpointError(f"{path}: stored config is invalid: {err}") from None
    net = build_model(config.architecture)
    state = {k[len(STATE_PREFIX):]: v for k, v in raw["state_dict"].items() if k.startswith(STATE_PREFIX)}
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{path}: weights do not match the stored config "
                              f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    net.to(map_location).eval()
    tokenizer = load_tokenizer(hparams["tokenizer"])
    return LoadedCheckpoint(net=net, config=config, tokenizer=tokenizer, path=Path(path),
                            global_step=int(raw.get("global_step", 0)))


def run_of(path: str | Path) -> tuple[str | None, str | None]:
    """(MLflow run id, tracking URI) recorded in the checkpoint by the run that wrote it."""
    hparams = read_checkpoint(path)["hyper_parameters"]
    return hparams.get("mlflow_run_id"), hparams.get("tracking_uri")
