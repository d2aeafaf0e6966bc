"""Every bad input to every command: exit 2, one stderr line naming the field or file, no traceback,
and nothing created (the whole temp tree, MHMOE_HOME included, lists the same before and after).

Cases run in process through :func:`mhmoe.cli.main` (a few seconds for the lot); the last tests run
the console entry point as a real process to show it behaves the same.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mhmoe.cli import main

REPO = Path(__file__).resolve().parents[1]

GOOD_SPEC = {
    "base": {"preset": "debug", "overrides": {"train.val_every": 10, "data.val_max_windows": 4}},
    "match": {"policy": "flops", "baseline": "base"},
    "budget": {"steps": 20},
    "validation": {"sets": ["shakespeare"], "metric": "val/shakespeare/ppl"},
    "retries": 1,
    "heartbeat": {"interval": 1, "grace": 4},
    "groups": {"smoe": {"model.ffn": "smoe"}, "mhmoe-h2": {"model.ffn": "mhmoe", "moe.heads": 2}},
    "grid": {"seed": [0]},
}

DUPLICATE_GROUP = """\
base: {preset: debug}
budget: {steps: 20}
groups:
  dense: {model.ffn: dense}
  mh: {model.ffn: mhmoe, moe.heads: 2}
  dense: {model.ffn: mhmoe}
"""

TRAIN_DATA = ["--preset", "debug", "data.val_sets=[]", "data.tokenizer=byte", "--no-progress"]
"""No validation set and the byte tokenizer: the bad corpus is the first thing that is read."""


def spec_with(**changes) -> str:
    data = json.loads(json.dumps(GOOD_SPEC))
    for dotted, value in changes.items():
        node = data
        *parents, leaf = dotted.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return yaml.safe_dump(data, sort_keys=False)


def fake_checkpoint(path: Path, *, digest: str | None) -> None:
    """A torch file shaped like an mhmoe checkpoint (config + weights); ``digest`` None = computed."""
    import torch

    from mhmoe.config.run import resolve_run_config
    from mhmoe.training.checkpoint import DIGEST_KEY, state_digest

    state = {"net.w": torch.ones(4, 4)}
    torch.save({"state_dict": state, DIGEST_KEY: digest or state_digest(state),
                "hyper_parameters": {"config": resolve_run_config("debug").to_dict()}}, path)


def make_inputs(d: Path) -> None:
    """Every input file the cases name, written under ``d`` (outside MHMOE_HOME)."""
    (d / "good.yaml").write_text(spec_with())
    (d / "dup_group.yaml").write_text(DUPLICATE_GROUP)
    (d / "dup_section.yaml").write_text(spec_with() + "budget: {steps: 5}\n")
    (d / "empty.yaml").write_text("")
    (d / "comment.yaml").write_text("# nothing here yet\n")
    (d / "latin1.yaml").write_bytes("name: caf\xe9\nbudget: {steps: 5}\n".encode("latin-1"))
    (d / "syntax.yaml").write_text("base: {preset: debug\nbudget: [\n")
    (d / "list.yaml").write_text("- base\n- budget\n")
    (d / "empty.txt").write_text("")
    (d / "binary.txt").write_bytes(b"\x00\xff\xfe\x80 not text " * 20)
    (d / "missing_field.jsonl").write_text('{"text": "fine"}\n{"body": "no text field"}\n')
    (d / "bad_line.jsonl").write_text('{"text": "fine"}\n{"text": oops}\n')
    (d / "no_text").mkdir()
    (d / "no_text" / "notes.md").write_text("not a corpus file type")
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"body": ["a document"]}), d / "no_column.parquet")
    (d / "zero.db").write_bytes(b"")
    (d / "corrupt.db").write_bytes(b"this is not a database\n" * 10)
    (d / "notes.txt").write_text("a plain text file\n")
    (d / "zeros.ckpt").write_bytes(b"\x00" * 4096)
    fake_checkpoint(d / "good_shape.ckpt", digest=None)
    data = (d / "good_shape.ckpt").read_bytes()
    (d / "truncated.ckpt").write_bytes(data[: len(data) // 2])
    fake_checkpoint(d / "bad_digest.ckpt", digest="0" * 64)
    import torch

    torch.save({"weights": torch.zeros(2)}, d / "not_mhmoe.ckpt")
    (d / "config_syntax.yaml").write_text("optim:\n  lr: [1\n")
    (d / "config_dup.yaml").write_text("optim:\n  lr: 0.001\n  lr: 0.002\n")
    (d / "config_list.yaml").write_text("- optim\n")
    (d / "config_latin1.yaml").write_bytes("train:\n  max_steps: 5 # \xe9\n".encode("latin-1"))
    for name, change in SPEC_FILES.items():
        (d / f"{name}.yaml").write_text(change(d))
    (d / "not_tokenizer.json").write_text("a plain text file named like a tokenizer\n")


SPEC_FILES = {
    "metric_stat": lambda d: spec_with(validation__metric="val/shakespeare/acc"),
    "metric_set": lambda d: spec_with(validation__metric="val/wiki/ppl"),
    "metric_train": lambda d: spec_with(validation__metric="train/loss"),
    "steps_huge": lambda d: spec_with(budget={"steps": 10**15}),
    "steps_float": lambda d: spec_with(budget={"steps": 1.0e15}),
    "steps_zero": lambda d: spec_with(budget={"steps": 0}),
    "steps_text": lambda d: spec_with(budget={"steps": "1e15"}),
    "tokens_huge": lambda d: spec_with(budget={"tokens": 10**16}),
    "steps_and_tokens": lambda d: spec_with(budget={"steps": 5, "tokens": 1000}),
    "grace_short": lambda d: spec_with(heartbeat={"interval": 30, "grace": 2}),
    "interval_zero": lambda d: spec_with(heartbeat={"interval": 0}),
    "corpus_missing": lambda d: spec_with(base__overrides__data__corpus=[str(d / "nope.txt")]),
    "val_missing": lambda d: spec_with(base__overrides__data__val_sets=[f"wiki={d / 'nope.jsonl'}"],
                                       validation={"metric": "val/wiki/ppl"}),
    "corpus_no_text": lambda d: spec_with(groups={"smoe": {"model.ffn": "smoe", "data.corpus": [str(d / "no_text")]}}),
    "lr_inf": lambda d: spec_with(base__overrides__optim__lr=float("inf")),
    "lr_negative": lambda d: spec_with(groups={"smoe": {"model.ffn": "smoe", "optim.lr": -0.1}}),
    "seed_negative": lambda d: spec_with(grid={"seed": [-1]}),
    "unknown_key": lambda d: spec_with(budegt={"steps": 5}),
    "retries_negative": lambda d: spec_with(retries=-1),
    "preset_unknown": lambda d: spec_with(base__preset="huge"),
    "policy_unknown": lambda d: spec_with(match={"policy": "params"}),
    "direction_unknown": lambda d: spec_with(validation__direction="down"),
    "config_missing": lambda d: spec_with(base__config="no_such_config.yaml"),
    "tokenizer_text": lambda d: spec_with(base__overrides__data__tokenizer=str(d / "not_tokenizer.json")),
    "devices_two": lambda d: spec_with(base__overrides__train__devices=2, base__overrides__train__accelerator="cpu"),
}

SWEEP_STORAGE = ["--storage", "sqlite:///{in}/new_optuna.db", "--tracking-uri", "sqlite:///{in}/new_mlflow.db"]

# id: (argv, text the one stderr line must contain)
CASES: dict[str, tuple[list[str], str]] = {
    # --- sweep specs (plan reads only; submit/run also check the data paths) ---
    "spec_duplicate_group": (["sweep", "plan", "{in}/dup_group.yaml"], "duplicate key 'dense'"),
    "spec_duplicate_section": (["sweep", "plan", "{in}/dup_section.yaml"], "duplicate key 'budget'"),
    "spec_empty": (["sweep", "submit", "{in}/empty.yaml", *SWEEP_STORAGE], "is empty; write at least base"),
    "spec_only_comment": (["sweep", "plan", "{in}/comment.yaml"], "is empty; write at least base"),
    "spec_not_utf8": (["sweep", "plan", "{in}/latin1.yaml"], "latin1.yaml' is not valid UTF-8"),
    "spec_yaml_syntax": (["sweep", "plan", "{in}/syntax.yaml"], "syntax.yaml': not valid YAML at line"),
    "spec_not_mapping": (["sweep", "plan", "{in}/list.yaml"], "a sweep spec must be a mapping"),
    "spec_missing_file": (["sweep", "plan", "{in}/no_such_spec.yaml"], "is neither a file nor a shipped spec"),
    "spec_metric_stat": (["sweep", "plan", "{in}/metric_stat.yaml"], "validation.metric='val/shakespeare/acc'"),
    "spec_metric_set": (["sweep", "submit", "{in}/metric_set.yaml", *SWEEP_STORAGE], "validation.metric='val/wiki/ppl'"),
    "spec_metric_train": (["sweep", "plan", "{in}/metric_train.yaml"], "validation.metric='train/loss'"),
    "spec_steps_huge": (["sweep", "plan", "{in}/steps_huge.yaml"], "budget.steps=1000000000000000 must be a whole number from 1 to 1e+07"),
    "spec_steps_float": (["sweep", "submit", "{in}/steps_float.yaml", *SWEEP_STORAGE], "budget.steps="),
    "spec_steps_zero": (["sweep", "plan", "{in}/steps_zero.yaml"], "budget.steps=0 must be a whole number from 1 to 1e+07"),
    "spec_steps_text": (["sweep", "plan", "{in}/steps_text.yaml"], "budget.steps='1e15' must be a whole number from 1 to 1e+07"),
    "spec_tokens_huge": (["sweep", "plan", "{in}/tokens_huge.yaml"], "budget.tokens="),
    "spec_steps_and_tokens": (["sweep", "plan", "{in}/steps_and_tokens.yaml"], "give steps or tokens, not both"),
    "spec_grace_short": (["sweep", "submit", "{in}/grace_short.yaml", *SWEEP_STORAGE],
                         "heartbeat.grace=2 must be >= 90 (3 x heartbeat.interval=30)"),
    "spec_interval_zero": (["sweep", "plan", "{in}/interval_zero.yaml"], "heartbeat.interval=0"),
    "spec_corpus_missing": (["sweep", "submit", "{in}/corpus_missing.yaml", *SWEEP_STORAGE],
                            "data.corpus[0]: data source"),
    "spec_corpus_missing_run": (["sweep", "run", "{in}/corpus_missing.yaml", *SWEEP_STORAGE], "nope.txt does not exist"),
    "spec_val_missing": (["sweep", "submit", "{in}/val_missing.yaml", *SWEEP_STORAGE], "data.val_sets[0]: data source"),
    "spec_corpus_no_text": (["sweep", "run", "{in}/corpus_no_text.yaml", *SWEEP_STORAGE], "holds no .txt/.jsonl/.parquet"),
    "spec_lr_inf": (["sweep", "plan", "{in}/lr_inf.yaml"], "optim.lr=inf must be a finite number > 0"),
    "spec_lr_negative": (["sweep", "plan", "{in}/lr_negative.yaml"], "optim.lr=-0.1 must be > 0"),
    "spec_seed_negative": (["sweep", "plan", "{in}/seed_negative.yaml"], "seed=-1 must be an integer in [0,"),
    "spec_unknown_key": (["sweep", "plan", "{in}/unknown_key.yaml"], "unknown spec key 'budegt'"),
    "spec_retries_negative": (["sweep", "plan", "{in}/retries_negative.yaml"], "retries=-1 must be an integer >= 0"),
    "spec_preset_unknown": (["sweep", "plan", "{in}/preset_unknown.yaml"], "base.preset='huge' is not allowed"),
    "spec_policy_unknown": (["sweep", "plan", "{in}/policy_unknown.yaml"], "match.policy='params' is not allowed"),
    "spec_direction_unknown": (["sweep", "plan", "{in}/direction_unknown.yaml"], "validation.direction='down'"),
    "spec_config_missing": (["sweep", "plan", "{in}/config_missing.yaml"], "base.config='no_such_config.yaml'"),
    "report_duplicate_group": (["report", "{in}/dup_group.yaml"], "duplicate key 'dense'"),
    "report_empty_spec": (["report", "{in}/empty.yaml"], "is empty; write at least base"),
    "report_missing_spec": (["report", "{in}/no_such_spec.yaml"], "is neither a file nor a shipped spec"),
    # --- sweep flags and storage ---
    "sweep_grace_flags": (["sweep", "submit", "{in}/good.yaml", *SWEEP_STORAGE, "--heartbeat-interval", "30",
                           "--grace-period", "2"], "--grace-period=2 must be >= 90 (3 x --heartbeat-interval=30)"),
    "sweep_grace_vs_spec": (["sweep", "run", "{in}/good.yaml", *SWEEP_STORAGE, "--heartbeat-interval", "5"],
                            "the spec's heartbeat.grace=4 must be >= 15 (3 x --heartbeat-interval=5)"),
    "sweep_interval_zero": (["sweep", "submit", "{in}/good.yaml", *SWEEP_STORAGE, "--heartbeat-interval", "0"],
                            "argument --heartbeat-interval: 0 is not allowed"),
    "sweep_workers_zero": (["sweep", "run", "{in}/good.yaml", *SWEEP_STORAGE, "--workers", "0"],
                           "argument --workers: 0 is not allowed; give an integer >= 1"),
    "sweep_cpu_workers_zero": (["sweep", "run", "{in}/good.yaml", *SWEEP_STORAGE, "--cpu-workers", "0"],
                               "argument --cpu-workers: 0 is not allowed"),
    "sweep_work_cpu_workers_zero": (["sweep", "work", "--study", "x", "--cpu-workers", "0"], "argument --cpu-workers"),
    "sweep_max_trials_zero": (["sweep", "work", "{in}/good.yaml", "--max-trials", "0"], "argument --max-trials"),
    "sweep_poll_negative": (["sweep", "work", "--study", "x", "--poll", "-1"], "argument --poll"),
    "sweep_storage_not_url": (["sweep", "submit", "{in}/good.yaml", "--storage", "not a url"], "is not a database URL"),
    "sweep_storage_backend": (["sweep", "submit", "{in}/good.yaml", "--storage", "redis://localhost/0"],
                              "backend 'redis' is not supported"),
    "sweep_storage_memory": (["sweep", "submit", "{in}/good.yaml", "--storage", "sqlite:///:memory:"], "names no file"),
    "sweep_storage_zero_byte": (["sweep", "submit", "{in}/good.yaml", "--storage", "sqlite:///{in}/zero.db"],
                                "zero.db is an empty file (0 bytes)"),
    "sweep_storage_corrupt": (["sweep", "submit", "{in}/good.yaml", "--storage", "sqlite:///{in}/corrupt.db"],
                              "corrupt.db is not a SQLite database"),
    "sweep_status_corrupt": (["sweep", "status", "--study", "x", "--storage", "sqlite:///{in}/corrupt.db"],
                             "corrupt.db is not a SQLite database"),
    "sweep_status_bad_url": (["sweep", "status", "{in}/good.yaml", "--storage", "sqlite//oops"], "is not a database URL"),
    "sweep_work_zero_byte": (["sweep", "work", "--study", "x", "--storage", "sqlite:///{in}/zero.db"], "empty file"),
    "sweep_tracking_scheme": (["sweep", "submit", "{in}/good.yaml", "--tracking-uri", "mlflow://host/x"],
                              "scheme 'mlflow' is not an MLflow store"),
    "sweep_tracking_corrupt": (["sweep", "run", "{in}/good.yaml", "--storage", "sqlite:///{in}/new_optuna.db",
                                "--tracking-uri", "sqlite:///{in}/corrupt.db"], "corrupt.db is not a SQLite database"),
    "sweep_work_tracking_bad": (["sweep", "work", "--study", "x", "--tracking-uri", "postgresql://u@h:port/db"],
                                "is not a database URL"),
    "sweep_status_spec_and_study": (["sweep", "status", "{in}/good.yaml", "--study", "x"], "give either SPEC or --study"),
    "sweep_status_neither": (["sweep", "status"], "give either SPEC or --study"),
    "sweep_unknown_action": (["sweep", "launch", "{in}/good.yaml"], "invalid choice: 'launch'"),
    "sweep_unknown_flag": (["sweep", "submit", "{in}/good.yaml", "--bogus"], "unrecognized arguments: --bogus"),
    # --- train: config values, config files, overrides ---
    "train_lr_inf": (["train", "--preset", "debug", "optim.lr=inf"], "optim.lr=inf must be a finite number > 0"),
    "train_router_unknown": (["train", "--preset", "debug", "moe.router=expert_choice"],
                             "moe.router='expert_choice' is not allowed; choose one of ['topk']"),
    "train_lr_nan": (["train", "--preset", "debug", "optim.lr=.nan"], "optim.lr=nan must be a finite number"),
    "train_lr_negative": (["train", "--preset", "debug", "optim.lr=-1e-3"], "optim.lr=-0.001 must be > 0"),
    "train_lr_zero": (["train", "--preset", "debug", "optim.lr=0"], "optim.lr=0.0 must be > 0"),
    "train_seed_negative": (["train", "--preset", "debug", "seed=-1"], "seed=-1 must be an integer in [0, 4294967295]"),
    "train_seed_huge": (["train", "--preset", "debug", "seed=4294967296"], "seed=4294967296"),
    "train_steps_absurd": (["train", "--preset", "debug", "train.max_steps=1000000000"], "train.max_steps=1000000000"),
    "train_max_steps_flag": (["train", "--preset", "debug", "--max-steps", "0"], "argument --max-steps: 0"),
    "train_unknown_key": (["train", "--preset", "debug", "moe.head=2"], "unknown config key 'moe.head'"),
    "train_override_form": (["train", "--preset", "debug", "moeheads"], "override 'moeheads' must look like key=value"),
    "train_override_yaml": (["train", "--preset", "debug", "moe.heads=[1"], "override moe.heads: value '[1'"),
    "train_override_type": (["train", "--preset", "debug", "moe.heads=two"], "moe.heads='two' must be an integer"),
    "train_preset_unknown": (["train", "--preset", "huge"], "unknown preset 'huge'"),
    "train_heads_not_dividing": (["train", "--preset", "debug", "model.ffn=mhmoe", "moe.heads=5"],
                                 "moe.heads=5 does not divide"),
    "train_config_missing": (["train", "--config", "{in}/nope.yaml"], "config file"),
    "train_config_syntax": (["train", "--config", "{in}/config_syntax.yaml"], "config_syntax.yaml': not valid YAML at line 3"),
    "train_config_duplicate": (["train", "--config", "{in}/config_dup.yaml"], "duplicate key 'lr'"),
    "train_config_not_utf8": (["train", "--config", "{in}/config_latin1.yaml"], "is not valid UTF-8"),
    "train_config_not_mapping": (["train", "--config", "{in}/config_list.yaml"], "must hold a mapping"),
    "train_resume_unknown": (["train", "--preset", "debug", "--resume", "0123456789abcdef"],
                             "--resume='0123456789abcdef': no MLflow store"),
    "train_tracking_corrupt": (["train", "--preset", "debug", "--tracking-uri", "sqlite:///{in}/corrupt.db"],
                               "--tracking-uri 'sqlite:///"),
    # --- train: data files ---
    "data_corpus_missing": (["train", *TRAIN_DATA, "data.corpus={in}/nope.txt"], "data.corpus[0]: data source"),
    "data_val_missing": (["train", "--preset", "debug", "data.val_sets=[wiki={in}/nope.jsonl]"],
                         "data.val_sets[0]: data source"),
    "data_tokenizer_missing": (["train", "--preset", "debug", "data.tokenizer={in}/tok/tokenizer.json"],
                               "data.tokenizer="),
    "data_empty_file": (["train", *TRAIN_DATA, "data.corpus={in}/empty.txt"], "holds no text (empty corpus)"),
    "data_binary_file": (["train", *TRAIN_DATA, "data.corpus={in}/binary.txt"], "binary.txt: not valid UTF-8"),
    "data_jsonl_missing_field": (["train", *TRAIN_DATA, "data.corpus={in}/missing_field.jsonl"],
                                 "missing_field.jsonl:2: record has no 'text' field"),
    "data_jsonl_bad_line": (["train", *TRAIN_DATA, "data.corpus={in}/bad_line.jsonl"], "bad_line.jsonl:2: not valid JSON"),
    "data_parquet_no_column": (["train", *TRAIN_DATA, "data.corpus={in}/no_column.parquet"], "has no 'text' column"),
    "data_folder_no_text": (["train", *TRAIN_DATA, "data.corpus={in}/no_text"], "holds no .txt/.jsonl/.parquet/.bin/.npy file"),
    # --- eval: checkpoints and flags ---
    "eval_missing": (["eval", "{in}/nope.ckpt", "--tasks", "mhmoe_mc"], "nope.ckpt does not exist"),
    "eval_zeroed": (["eval", "{in}/zeros.ckpt", "--tasks", "mhmoe_mc"], "is not a safe, readable torch checkpoint"),
    "eval_truncated": (["eval", "{in}/truncated.ckpt", "--tasks", "mhmoe_mc"], "truncated.ckpt is not a safe"),
    "eval_text_file": (["eval", "{in}/notes.txt", "--tasks", "mhmoe_mc"], "notes.txt is not a safe"),
    "eval_not_mhmoe": (["eval", "{in}/not_mhmoe.ckpt", "--tasks", "mhmoe_mc"], "is not an mhmoe training checkpoint"),
    "eval_bad_digest": (["eval", "{in}/bad_digest.ckpt", "--tasks", "mhmoe_mc"], "do not match the digest"),
    "eval_batch_zero": (["eval", "{in}/good_shape.ckpt", "--tasks", "mhmoe_mc", "--batch-size", "0"],
                        "argument --batch-size: 0"),
    "eval_limit_negative": (["eval", "{in}/good_shape.ckpt", "--tasks", "mhmoe_mc", "--limit", "-1"], "argument --limit"),
    "eval_tracking_scheme": (["eval", "{in}/good_shape.ckpt", "--tasks", "mhmoe_mc", "--tracking-uri", "ftp://x/y"],
                             "scheme 'ftp' is not an MLflow store"),
    "eval_no_tasks": (["eval", "{in}/good_shape.ckpt"], "give a CHECKPOINT and --tasks"),
    # --- budget, smoke, ui, dispatcher ---
    "budget_preset": (["budget", "--preset", "huge"], "unknown preset 'huge'"),
    "budget_seq_len": (["budget", "--seq-len", "0"], "argument --seq-len: 0"),
    "smoke_preset": (["smoke", "--preset", "huge"], "unknown preset 'huge'"),
    "smoke_tokens": (["smoke", "--tokens", "0"], "argument --tokens: 0"),
    "ui_port_high": (["ui", "--port", "99999", "--dry-run"], "argument --port: 99999 is not allowed; give an integer in 1..65535"),
    "ui_port_zero": (["ui", "--port", "0", "--dry-run"], "argument --port: 0"),
    "ui_port_text": (["ui", "--port", "http", "--dry-run"], "argument --port: 'http' is not an integer"),
    "ui_tracking_corrupt": (["ui", "--tracking-uri", "sqlite:///{in}/corrupt.db", "--dry-run"], "corrupt.db is not a SQLite"),
    "report_tracking_corrupt": (["report", "{in}/good.yaml", "--tracking-uri", "sqlite:///{in}/corrupt.db"],
                                "corrupt.db is not a SQLite database"),
    "cli_unknown_command": (["trian"], "unknown command 'trian'"),
    # --- what no worker could run, refused at submit (and by train) ---
    "spec_tokenizer_not_loadable": (["sweep", "submit", "{in}/tokenizer_text.yaml", *SWEEP_STORAGE],
                                    "not_tokenizer.json': cannot load tokenizer"),
    "data_tokenizer_not_loadable": (["train", "--preset", "debug", "data.tokenizer={in}/not_tokenizer.json"],
                                    "not_tokenizer.json': cannot load tokenizer"),
    "sweep_run_devices": (["sweep", "run", "{in}/devices_two.yaml", *SWEEP_STORAGE],
                          "need train.devices=2; each worker here holds 1 device(s) on one node; start workers "
                          "with --devices 0,1 --devices-per-trial 2 (GPUs) or --devices-per-trial 2 (CPU ranks)"),
    # --- folders under a regular file, a GPU or memory this machine lacks, lm-eval model args, names that name nothing
    "train_checkpoint_dir_under_file": (["train", "--preset", "debug", "--checkpoint-dir", "{in}/notes.txt/ckpt"],
                                        "argument --checkpoint-dir: '{in}/notes.txt/ckpt': {in}/notes.txt is a file"),
    "train_tracking_under_file": (["train", "--preset", "debug", "--tracking-uri", "sqlite:///{in}/notes.txt/m.db"],
                                  "notes.txt is a file, not a folder"),
    "report_out_under_file": (["report", "{in}/good.yaml", "--out", "{in}/notes.txt/report"],
                              "argument --out: '{in}/notes.txt/report': {in}/notes.txt is a file, not a folder"),
    "sweep_log_dir_under_file": (["sweep", "run", "{in}/good.yaml", *SWEEP_STORAGE, "--log-dir", "{in}/notes.txt/logs"],
                                 "argument --log-dir: '{in}/notes.txt/logs': {in}/notes.txt is a file"),
    "sweep_checkpoint_root_under_file": (["sweep", "run", "{in}/good.yaml", *SWEEP_STORAGE, "--checkpoint-root",
                                          "{in}/notes.txt/ck"], "argument --checkpoint-root: '{in}/notes.txt/ck'"),
    "sweep_storage_under_file": (["sweep", "submit", "{in}/good.yaml", "--storage", "sqlite:///{in}/notes.txt/o.db"],
                                 "storage 'sqlite:///{in}/notes.txt/o.db': {in}/notes.txt is a file, not a folder"),
    "sweep_tracking_under_file": (["sweep", "submit", "{in}/good.yaml", "--storage", "sqlite:///{in}/new_optuna.db",
                                   "--tracking-uri", "sqlite:///{in}/notes.txt/m.db"], "notes.txt is a file, not a folder"),
    "ui_tracking_under_file": (["ui", "--tracking-uri", "sqlite:///{in}/notes.txt/m.db", "--dry-run"],
                               "notes.txt is a file, not a folder"),
    "train_d_model_huge": (["train", "--preset", "debug", "model.d_model=1000000000"], "per device exceeds the"),
    "lm_eval_no_pretrained": (["lm-eval", "--model", "mhmoe", "--tasks", "mhmoe_mc"],
                              "--model_args needs pretrained=CHECKPOINT"),
    "lm_eval_unknown_model_arg": (["lm-eval", "--model", "mhmoe", "--model_args", "pretrained={in}/good_shape.ckpt",
                                   "revision=main", "--tasks", "mhmoe_mc"], "--model_args revision: not an argument"),
    "lm_eval_missing_checkpoint": (["lm-eval", "--model", "mhmoe", "--model_args", "pretrained={in}/nope.ckpt",
                                    "--tasks", "mhmoe_mc"], "mhmoe lm-eval: checkpoint {in}/nope.ckpt does not exist"),
    "sweep_status_no_study": (["sweep", "status", "--study", "nope"], "no study 'nope' in sqlite:///"),
    "sweep_work_no_study": (["sweep", "work", "--study", "nope"], "no study 'nope' in sqlite:///"),
    "sweep_extend_no_study": (["sweep", "extend", "{in}/good.yaml"], "no study 'good' in sqlite:///"),
    "report_no_store": (["report", "{in}/good.yaml"], "no MLflow store at"),
    # --- export ---
    "export_missing": (["export", "{in}/nope.ckpt", "{in}/hf"], "nope.ckpt does not exist"),
    "export_not_mhmoe": (["export", "{in}/not_mhmoe.ckpt", "{in}/hf"], "is not an mhmoe training checkpoint"),
    "export_bad_digest": (["export", "{in}/bad_digest.ckpt", "{in}/hf"], "do not match the digest"),
    "export_wrong_weights": (["export", "{in}/good_shape.ckpt", "{in}/hf"], "weights do not match the stored config"),
    "export_dir_not_empty": (["export", "{in}/good_shape.ckpt", "{in}"], "is not empty; pass --force to replace it"),
    "export_dir_is_file": (["export", "{in}/good_shape.ckpt", "{in}/empty.txt"], "exists and is not a folder"),
    # --- data prepare ---
    "data_prepare_action_unknown": (["data", "tokenize"], "argument action: invalid choice: 'tokenize'"),
    "data_prepare_workers_zero": (["data", "prepare", "--workers", "0"], "argument --workers: 0"),
    "data_prepare_corpus_missing": (["data", "prepare", *TRAIN_DATA[:-1], "data.corpus={in}/nope.txt"],
                                    "data.corpus[0]: data source"),
    "data_prepare_bad_line": (["data", "prepare", *TRAIN_DATA[:-1], "data.corpus={in}/bad_line.jsonl"],
                              "bad_line.jsonl:2: not valid JSON"),
    "data_prepare_bpe_bad_line": (["data", "prepare", "--preset", "debug", "data.val_sets=[]",
                                   "data.corpus={in}/bad_line.jsonl"], "bad_line.jsonl:2: not valid JSON"),
    "data_prepare_pretokenized_bpe": (["data", "prepare", "--preset", "debug", "data.corpus={in}/ids.npy"],
                                      "data.corpus[0]='{in}/ids.npy' is pre-tokenized: set data.tokenizer"),
    "data_token_dtype_unknown": (["data", "prepare", "--preset", "debug", "data.token_dtype=int8"],
                                 "data.token_dtype='int8' is not allowed; choose one of ['auto', 'uint16', 'uint32']"),
    "data_mixture_weight_zero": (["data", "prepare", "--preset", "debug", "data.corpus=[{path: shakespeare, weight: 0}]"],
                                 "data.corpus[0].weight=0.0 must be a finite number > 0"),
    "data_mixture_unknown_key": (["train", "--preset", "debug", "data.corpus=[{path: shakespeare, wieght: 2}]"],
                                 "unknown config key 'data.corpus[0].wieght'"),
}


def listing(root: Path) -> list[tuple[str, int]]:
    """Every path under ``root`` with its size (folders -1): what "nothing created or changed" compares."""
    return sorted((str(p.relative_to(root)), p.stat().st_size if p.is_file() else -1) for p in root.rglob("*"))


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh MHMOE_HOME, input folder and working folder per case; default stores inside the home."""
    for name in ("home", "in", "cwd"):
        (tmp_path / name).mkdir()
    monkeypatch.setenv("MHMOE_HOME", str(tmp_path / "home"))
    for var in ("MLFLOW_TRACKING_URI", "MHMOE_SWEEP_STORAGE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path / "cwd")
    make_inputs(tmp_path / "in")
    return tmp_path


def check_refused(code: int, err: str, expected: str, before: list, after: list) -> None:
    lines = err.strip().splitlines()
    assert code == 2, (code, err)
    assert len(lines) == 1, err
    assert expected in lines[0], lines[0]
    assert "Traceback" not in err
    assert after == before, f"created or changed: {sorted(set(after) ^ set(before))}"


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_exit_2_and_creates_nothing(case: str, sandbox: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    argv, expected = CASES[case]
    argv = [arg.replace("{in}", str(sandbox / "in")) for arg in argv]
    expected = expected.replace("{in}", str(sandbox / "in"))
    before = listing(sandbox)
    code = main(argv)
    check_refused(code, capsys.readouterr().err, expected, before, listing(sandbox))


def test_read_only_sweep_commands_create_no_store(sandbox: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """status/work on a fresh home refuse the study that is not there (exit 2) without creating optuna.db;
    plan and report create nothing either."""
    good = str(sandbox / "in" / "good.yaml")
    before = listing(sandbox)
    assert main(["sweep", "status", good]) == 2
    assert main(["sweep", "work", "--study", "good"]) == 2
    assert "no study 'good'" in capsys.readouterr().err
    assert main(["sweep", "plan", good]) == 0
    assert main(["report", good]) == 2
    assert "no MLflow store" in capsys.readouterr().err
    assert listing(sandbox) == before


def test_plan_warns_about_missing_data_that_submit_refuses(sandbox: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = str(sandbox / "in" / "corpus_missing.yaml")
    assert main(["sweep", "plan", spec]) == 0
    out = capsys.readouterr().out
    assert "warning: point " in out and "data.corpus[0]" in out and "nope.txt does not exist" in out


def test_zero_byte_default_store_is_refused_not_recreated(sandbox: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A zero-byte optuna.db in the home used to make submit re-create the study and re-queue everything."""
    (sandbox / "home" / "optuna.db").write_bytes(b"")
    before = listing(sandbox)
    code = main(["sweep", "submit", str(sandbox / "in" / "good.yaml")])
    check_refused(code, capsys.readouterr().err, "optuna.db is an empty file (0 bytes)", before, listing(sandbox))


def test_work_checks_grace_against_the_study_heartbeat(sandbox: Path, capsys: pytest.CaptureFixture[str]) -> None:
    storage = f"sqlite:///{sandbox / 'in' / 'optuna.db'}"
    assert main(["sweep", "submit", str(sandbox / "in" / "good.yaml"), "--storage", storage]) == 0
    capsys.readouterr()
    before = listing(sandbox)
    code = main(["sweep", "work", "--study", "good", "--storage", storage, "--grace-period", "2"])
    check_refused(code, capsys.readouterr().err, "--grace-period=2 must be >= 3 (3 x the study's heartbeat.interval=1)",
                  before, listing(sandbox))


def test_resume_of_an_unknown_run_in_an_existing_store(sandbox: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import mlflow

    uri = f"sqlite:///{sandbox / 'in' / 'mlflow.db'}"
    mlflow.MlflowClient(uri).search_experiments()  # creates the store
    capsys.readouterr()
    before = listing(sandbox)
    code = main(["train", "--preset", "debug", "--tracking-uri", uri, "--resume", "f" * 32])
    check_refused(code, capsys.readouterr().err, f"--resume='{'f' * 32}': no such MLflow run", before, listing(sandbox))


SUBPROCESS_CASES = ["sweep_grace_flags", "train_lr_inf", "ui_port_high"]


@pytest.mark.parametrize("case", SUBPROCESS_CASES)
def test_console_script_refuses_the_same(case: str, sandbox: Path) -> None:
    argv, expected = CASES[case]
    argv = [arg.replace("{in}", str(sandbox / "in")) for arg in argv]
    before = listing(sandbox)
    env = {**os.environ, "PYTHONPATH": str(REPO), "MLFLOW_DISABLE_TELEMETRY": "true"}
    script = Path(sys.executable).with_name("mhmoe")  # the installed console script, else the module
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "mhmoe.cli"]
    out = subprocess.run([*command, *argv], capture_output=True, text=True, timeout=120, env=env)
    check_refused(out.returncode, out.stderr, expected, before, listing(sandbox))


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("uri", ["http://127.0.0.1:{port}", "postgresql+psycopg://mhmoe:secret@127.0.0.1:{port}/mlflow"])
def test_a_tracking_store_that_does_not_answer_is_refused(uri: str, sandbox: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """Checking the form only let every worker die on a server that is not there."""
    port = free_port()
    before = listing(sandbox)
    code = main(["sweep", "submit", str(sandbox / "in" / "good.yaml"), "--storage",
                 f"sqlite:///{sandbox / 'in' / 'new_optuna.db'}", "--tracking-uri", uri.format(port=port)])
    err = capsys.readouterr().err
    check_refused(code, err, f"@127.0.0.1:{port}" if "@" in uri else f"'http://127.0.0.1:{port}': no answer", before,
                  listing(sandbox))
    assert "secret" not in err and "timeout 5 s" in err


CLUSTER_VARS = ("SLURM_NTASKS", "TORCHELASTIC_RUN_ID", "LSB_JOBID", "MASTER_ADDR", "NODE_RANK")


def test_multi_node_training_outside_a_cluster_launcher_is_refused(sandbox: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """Lightning would wait for the other node for ever."""
    for var in CLUSTER_VARS:
        monkeypatch.delenv(var, raising=False)
    before = listing(sandbox)
    code = main(["train", "--preset", "debug", "train.num_nodes=2"])
    check_refused(code, capsys.readouterr().err, "train.num_nodes=2 needs a cluster launcher", before, listing(sandbox))


SHORT_RUN = ["--preset", "debug", "train.max_steps=4", "train.val_every=4", "data.val_max_windows=2",
             "train.peak_flops=1e12", "train.system_metrics=false", "--no-progress"]
"""A 4-step debug run (no FLOP/s measurement, no system-metrics thread): seconds."""


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory, seeded_home) -> tuple[Path, str]:
    """(home, run id): a run that finished at step 4, with the default store and checkpoint folder in the home."""
    import mlflow

    home = seeded_home(tmp_path_factory.mktemp("finished") / "home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MHMOE_HOME", str(home))
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        assert main(["train", *SHORT_RUN]) == 0
    (run,) = mlflow.MlflowClient(f"sqlite:///{home / 'mlflow.db'}").search_runs(["0", "1"])
    return home, run.info.run_id


def _resume_refused(home: Path, run_id: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                    expected: str, *watched: Path) -> None:
    """``mhmoe train --resume`` in ``home``: refused in one line, and nothing under ``watched`` changes."""
    monkeypatch.setenv("MHMOE_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    capsys.readouterr()
    before = [listing(folder) for folder in watched]
    code = main(["train", *SHORT_RUN, "--resume", run_id])
    check_refused(code, capsys.readouterr().err, expected, before, [listing(folder) for folder in watched])


def test_resume_of_a_finished_run_is_refused(finished_run, capsys, monkeypatch) -> None:
    import mlflow

    home, run_id = finished_run
    client = mlflow.MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    command = client.get_run(run_id).data.tags["mhmoe.command"]
    _resume_refused(home, run_id, capsys, monkeypatch, "the run finished at step 4 (train.max_steps=4)", home)
    assert client.get_run(run_id).data.tags["mhmoe.command"] == command


def test_resume_of_a_run_whose_checkpoints_are_gone_is_refused(finished_run, capsys, monkeypatch,
                                                               tmp_path: Path) -> None:
    home, run_id = finished_run
    folder = home / "checkpoints" / "runs" / run_id
    folder.rename(tmp_path / "aside")
    try:
        _resume_refused(home, run_id, capsys, monkeypatch,
                        f"the run's checkpoints are gone ({folder} holds no last.ckpt or previous.ckpt); "
                        "to start fresh, run mhmoe train without --resume", home)
    finally:
        (tmp_path / "aside").rename(folder)


def test_resume_in_a_copied_home_never_writes_into_the_original(finished_run, capsys, monkeypatch,
                                                                tmp_path: Path) -> None:
    """The copy's store still names the original's artifact folder (MLflow records it absolute): refused."""
    home, run_id = finished_run
    copy = tmp_path / "copy"
    shutil.copytree(home, copy)
    (copy / "checkpoints" / "runs" / run_id / "final.ckpt").unlink()  # not finished: a resume would train
    _resume_refused(copy, run_id, capsys, monkeypatch,
                    f"the run's artifacts are recorded in {home / 'mlartifacts'}, not beside its store", home, copy)


@pytest.mark.parametrize("argv", [["train", "--preset", "debug"], ["sweep", "submit", "{in}/good.yaml"],
                                  ["sweep", "status", "--study", "x"], ["ui", "--dry-run"]])
def test_a_home_under_a_file_is_refused(argv: list[str], sandbox: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    notes = sandbox / "in" / "notes.txt"
    monkeypatch.setenv("MHMOE_HOME", str(notes / "home"))
    before = listing(sandbox)
    code = main([arg.replace("{in}", str(sandbox / "in")) for arg in argv])
    check_refused(code, capsys.readouterr().err, f"MHMOE_HOME='{notes / 'home'}': {notes} is a file, not a folder",
                  before, listing(sandbox))


def test_a_gpu_this_machine_lacks_is_refused(sandbox: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    before = listing(sandbox)
    code = main(["train", "--preset", "debug", "train.accelerator=cuda"])
    check_refused(code, capsys.readouterr().err, "train.accelerator='cuda' but torch sees no CUDA GPU on this machine",
                  before, listing(sandbox))
