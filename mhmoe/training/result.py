"""What one ``train()`` call returns, also across the rank-process boundary (as JSON)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass
class TrainResult:
    run_id: str
    checkpoint_path: Path
    metrics: dict[str, float]
    start_step: int
    final_step: int

    def to_json(self) -> str:
        return json.dumps({"run_id": self.run_id, "checkpoint_path": str(self.checkpoint_path),
                           "metrics": self.metrics, "start_step": self.start_step, "final_step": self.final_step})

    @classmethod
    def from_json(cls, text: str) -> TrainResult:
        data = json.loads(text)
        return cls(run_id=data["run_id"], checkpoint_path=Path(data["checkpoint_path"]), metrics=data["metrics"],
                   start_step=data["start_step"], final_step=data["final_step"])
