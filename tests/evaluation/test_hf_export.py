"""``mhmoe export``: the Hugging Face folder loads in transformers and computes mhmoe's logits.

Untrained checkpoints of every layout (tests/evaluation/untrained.py, byte tokenizer); the trained
debug checkpoint under the stock ``lm_eval --model hf`` is in test_eval_command.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer

from mhmoe.commands.export import main
from mhmoe.export.hf import export_checkpoint
from mhmoe.training.checkpoint import load_checkpoint
from tests.evaluation.untrained import VARIANTS, write_untrained_checkpoint

TEXT = "KING. Good morrow, cousins; the night was long — and cold. <|endoftext|> Café?"


def load_exported(folder: Path, **kwargs: object) -> torch.nn.Module:
    return AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True, **kwargs)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_exported_model_computes_the_checkpoints_logits(variant: str, tmp_path: Path) -> None:
    checkpoint = write_untrained_checkpoint(tmp_path / "model.ckpt", VARIANTS[variant])
    assert main([str(checkpoint), str(tmp_path / "hf")]) == 0
    loaded = load_checkpoint(checkpoint)
    reference = loaded.net
    model = load_exported(tmp_path / "hf")
    idx_BT = torch.randint(0, 257, (3, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        if loaded.config.moe.batch_dependent_at_eval:  # rows compete for expert slots: mhmoe scores each alone
            expected = torch.cat([reference(row_1T).logits for row_1T in idx_BT.split(1)])
        else:
            expected = reference(idx_BT).logits
        got = model(idx_BT).logits
    assert torch.allclose(got, expected, atol=1e-5, rtol=0), float((got - expected).abs().max())
    # Weights only, under the names the wrapper gives them: no optimizer or loop state.
    with safe_open(str(tmp_path / "hf" / "model.safetensors"), "pt") as weights:
        assert sorted(weights.keys()) == sorted(f"net.{key}" for key in reference.state_dict())


def test_tokenizer_generate_and_padding_match_mhmoe(tmp_path: Path) -> None:
    checkpoint = write_untrained_checkpoint(tmp_path / "model.ckpt", VARIANTS["mhmoe_h3"])
    folder = export_checkpoint(checkpoint, tmp_path / "hf")
    loaded = load_checkpoint(checkpoint)
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
    model = load_exported(folder)
    # Same ids (bytes; end-of-text written in the text is text, as in mhmoe), same text back.
    ids = tokenizer(TEXT)["input_ids"]
    assert ids == loaded.tokenizer.encode(TEXT)
    assert tokenizer.decode(ids) == TEXT
    assert tokenizer.eos_token_id == tokenizer.bos_token_id == loaded.tokenizer.eos_id

    # generate() is mhmoe's greedy decoding (no cache: the whole sequence each step).
    prompt = ids[:10]
    greedy = list(prompt)
    for _ in range(6):
        with torch.no_grad():
            greedy.append(int(loaded.net(torch.tensor([greedy])).logits[0, -1].argmax()))
    out = model.generate(torch.tensor([prompt]), max_new_tokens=6, do_sample=False, eos_token_id=None)
    assert out[0].tolist() == greedy

    # A left-padded batch (what generate and lm-eval's hf model build) scores each row as mhmoe does alone.
    batch = tokenizer(["KING. Good morrow", "Café"], padding=True, padding_side="left", return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits
        short = loaded.net(torch.tensor([loaded.tokenizer.encode("Café")])).logits[0]
    assert torch.allclose(logits[1, -short.shape[0]:], short, atol=1e-5)


def test_bfloat16_load_is_close_to_float32(tmp_path: Path) -> None:
    checkpoint = write_untrained_checkpoint(tmp_path / "model.ckpt", VARIANTS["smoe"])
    folder = export_checkpoint(checkpoint, tmp_path / "hf")
    idx_BT = torch.randint(0, 257, (1, 12), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full = load_exported(folder)(idx_BT).logits
        half = load_exported(folder, dtype=torch.bfloat16)(idx_BT).logits
    assert half.dtype == torch.bfloat16
    assert torch.allclose(half.float(), full, atol=0.05)


def test_force_replaces_a_folder_and_nothing_is_left_beside_it(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    checkpoint = write_untrained_checkpoint(tmp_path / "model.ckpt", VARIANTS["dense"])
    out = tmp_path / "out" / "hf"
    out.mkdir(parents=True)
    (out / "stale.txt").write_text("from before")
    assert main([str(checkpoint), str(out)]) == 2
    assert "is not empty; pass --force" in capsys.readouterr().err
    assert main([str(checkpoint), str(out), "--force"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "generation_config.json", "model.safetensors",
                                                      "modeling_mhmoe.py", "tokenizer.json", "tokenizer_config.json"]
    assert [p.name for p in out.parent.iterdir()] == ["hf"]  # no staging or replaced folder left
    config = json.loads((out / "config.json").read_text())
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_mhmoe.MHMoEForCausalLM"
    assert json.loads((out / "tokenizer_config.json").read_text())["tokenizer_class"] == "PreTrainedTokenizerFast"
