"""TrainRequest: one frozen object for a train() call, refused when inconsistent, plain across rank processes."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from mhmoe.config.run import resolve_run_config
from mhmoe.training.checkpoint_files import ResumePick
from mhmoe.training.request import TrainRequest


@pytest.fixture(scope="module")
def cfg():
    return resolve_run_config("debug")


@pytest.mark.parametrize(("fields", "message"), [
    ({"resume": True}, "resume needs the run_id"),
    ({"resume_pick": ResumePick(path=None)}, "resume_pick"),
    ({"stop_after": 0}, "stop_after must be a step >= 1"),
    ({"stop_after": 2.5}, "stop_after must be a step >= 1"),
    ({"experiment_name": ""}, "experiment_name must not be empty"),
])
def test_an_inconsistent_request_is_refused_when_made(cfg, fields: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrainRequest(config=cfg, **fields)


def test_a_request_needs_a_run_config() -> None:
    with pytest.raises(TypeError, match="RunConfig"):
        TrainRequest(config={"seed": 0})  # type: ignore[arg-type]


def test_a_request_is_frozen_and_keeps_no_reference_to_the_callers_containers(cfg, tmp_path: Path) -> None:
    tags, callbacks = {"a": "1"}, [object()]
    request = TrainRequest(config=cfg, tags=tags, callbacks=callbacks,
                           checkpoint_dir=str(tmp_path))  # type: ignore[arg-type]
    tags["b"], callbacks[:] = "2", []
    assert request.tags == {"a": "1"} and len(request.callbacks) == 1
    assert request.checkpoint_dir == tmp_path
    with pytest.raises(dataclasses.FrozenInstanceError):
        request.resume = True  # type: ignore[misc]


def test_rank_processes_rebuild_the_plain_part_of_a_request_from_json(cfg, tmp_path: Path) -> None:
    request = TrainRequest(config=cfg, tracking_uri="sqlite:///x.db", experiment_name="e", run_name="r",
                           tags={"t": "v"}, parent_run_id="p", run_id="run", checkpoint_dir=tmp_path, resume=True,
                           progress=False, stop_after=3, resume_pick=ResumePick(path=None), callbacks=[object()])
    rebuilt = TrainRequest(config=cfg, **json.loads(json.dumps(request.rank_fields())))
    # The objects (fence, pick, callbacks, rank-zero hooks) stay with the caller; everything else crosses.
    assert rebuilt == dataclasses.replace(request, resume_pick=None, callbacks=())
