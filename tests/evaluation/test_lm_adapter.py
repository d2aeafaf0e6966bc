"""The ``mhmoe`` lm-eval model against direct computations with the trained net itself."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from lm_eval import simple_evaluate
from lm_eval.api.instance import Instance
from lm_eval.api.registry import get_model
from lm_eval.tasks import TaskManager

from mhmoe.evaluation.lm_adapter import MHMoELM
from mhmoe.evaluation.local_tasks import render_local_tasks
from mhmoe.training.checkpoint import CheckpointError
from tests.evaluation.trained import train_debug_checkpoint

# Written for these tests (blank verse in the corpus's style), long enough for several windows.
TEXT = (
    "Enter the KING and his lords, with drums and colours.\n\n"
    "KING. Good morrow, cousins; the night was long and cold,\n"
    "And all our watch upon the walls hath kept\n"
    "A patient eye on every road to town.\n"
    "What news from France? Hath any rider come?\n\n"
    "LORD. My liege, a messenger is at the gate,\n"
    "Whose horse is white with foam, whose boots are red\n"
    "With mire of twenty miles; he bears a letter\n"
    "Sealed with the lilies, and he will not speak\n"
    "Till he hath seen your Majesty alone.\n\n"
    "KING. Then let him in, and let the rest withdraw.\n"
)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_debug_checkpoint(tmp_path_factory.mktemp("ckpt")).checkpoint_path


@pytest.fixture(scope="module")
def lm(checkpoint: Path) -> MHMoELM:
    return MHMoELM(pretrained=str(checkpoint), batch_size=4)


def token_logprobs(net: torch.nn.Module, inputs: list[int], targets: list[int]) -> torch.Tensor:
    """log p(targets[i] | inputs[: i + 1]) for every position, straight from the net (float64)."""
    with torch.no_grad():
        logits = net(torch.tensor([inputs])).logits[0].float()
    return -F.cross_entropy(logits, torch.tensor(targets), reduction="none").double()


def direct_rolling(net: torch.nn.Module, eos: int, tokens: list[int], window: int) -> float:
    """The standard rule, written independently: every token predicted once, in windows of the
    context length; the first from EOS; the last window is a full window ending at the text's end."""
    stream = [eos] + tokens
    total = 0.0
    for start in range(0, len(tokens), window):
        end = min(start + window, len(tokens))
        begin = max(0, end - window)
        logp = token_logprobs(net, stream[begin:end], stream[begin + 1 : end + 1])
        total += float(logp[start - begin :].sum())
    return total


def rolling(lm: MHMoELM, text: str) -> float:
    return lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (text,), 0)], disable_tqdm=True)[0]


def test_rolling_loglikelihood_is_the_nets_summed_token_loss(lm: MHMoELM) -> None:
    window = lm.max_length
    tokens = lm.tok_encode(TEXT)
    assert len(tokens) > 2 * window + 5, "text must span several windows, the last one partial"
    assert rolling(lm, TEXT) == pytest.approx(direct_rolling(lm.net, lm.eot_token_id, tokens, window), abs=1e-4)
    # One window: plainly the cross-entropy of the sequence, its first token predicted from EOS.
    short = lm.tok_encode("KING. Then let him in.")
    inputs = [lm.eot_token_id] + short[:-1]
    assert rolling(lm, "KING. Then let him in.") == pytest.approx(
        float(token_logprobs(lm.net, inputs, short).sum()), abs=1e-4)


def test_a_shorter_context_window_rolls_the_same_way(checkpoint: Path) -> None:
    lm = MHMoELM(pretrained=str(checkpoint), max_length=16)
    tokens = lm.tok_encode(TEXT)
    assert rolling(lm, TEXT) == pytest.approx(direct_rolling(lm.net, lm.eot_token_id, tokens, 16), abs=1e-4)
    with pytest.raises(ValueError, match="exceeds the model's max_seq_len"):
        MHMoELM(pretrained=str(checkpoint), max_length=lm.net.model_cfg.max_seq_len + 1)


def test_loglikelihood_matches_direct_computation_and_is_greedy_matches_argmax(lm: MHMoELM) -> None:
    context = lm.tok_encode("KING. Good morrow, cousins; the night was")
    greedy = []
    for _ in range(4):  # the net's own greedy continuation
        with torch.no_grad():
            greedy.append(int(lm.net(torch.tensor([context + greedy])).logits[0, -1].argmax()))
    other = [(greedy[0] + 1) % lm.tokenizer.vocab_size] + greedy[1:]
    results = lm._loglikelihood_tokens([(None, context, greedy), (None, context, other)], disable_tqdm=True)
    for (logprob, _), cont in zip(results, (greedy, other)):
        whole = context + cont
        direct = token_logprobs(lm.net, whole[:-1], whole[1:])[-len(cont):].sum()
        assert logprob == pytest.approx(float(direct), abs=1e-4)
    assert [is_greedy for _, is_greedy in results] == [True, False]

    # Through the string API: same split of the tokens as TemplateLM makes (whole text, then context).
    (logprob, _), = lm.loglikelihood([Instance("loglikelihood", {}, ("The night was", " long and cold"), 0)],
                                     disable_tqdm=True)
    whole, ctx = lm.tok_encode("The night was long and cold"), lm.tok_encode("The night was")
    direct = token_logprobs(lm.net, whole[:-1], whole[1:])[len(ctx) - 1 :].sum()
    assert logprob == pytest.approx(float(direct), abs=1e-4)


def test_long_context_is_truncated_from_the_left(lm: MHMoELM) -> None:
    tokens = lm.tok_encode(TEXT)
    context, continuation = tokens[:-5], tokens[-5:]
    assert len(context) > lm.max_length
    (logprob, _), = lm._loglikelihood_tokens([(None, context, continuation)], disable_tqdm=True)
    kept = (context + continuation)[-(lm.max_length + 1) :]
    assert logprob == pytest.approx(float(token_logprobs(lm.net, kept[:-1], kept[1:])[-5:].sum()), abs=1e-4)


def test_scores_do_not_depend_on_batching(checkpoint: Path, lm: MHMoELM) -> None:
    tokens = lm.tok_encode(TEXT)
    requests = [(None, tokens[: 3 + i * 7], tokens[3 + i * 7 : 6 + i * 9]) for i in range(12)]
    alone = MHMoELM(pretrained=str(checkpoint), batch_size=1)._loglikelihood_tokens(requests, disable_tqdm=True)
    batched = lm._loglikelihood_tokens(requests, disable_tqdm=True)
    assert [g for _, g in alone] == [g for _, g in batched]
    assert [s for s, _ in batched] == pytest.approx([s for s, _ in alone], abs=1e-4)


def generate(lm: MHMoELM, prompt: str, **gen_kwargs: object) -> str:
    return lm.generate_until([Instance("generate_until", {}, (prompt, gen_kwargs), 0)], disable_tqdm=True)[0]


def test_generate_until_is_greedy_and_stops_at_the_stop_sequence(lm: MHMoELM) -> None:
    prompt = "KING. Good morrow, cousins"
    tokens = lm.tok_encode(prompt)
    for _ in range(12):  # the net's own greedy tokens
        with torch.no_grad():
            next_token = int(lm.net(torch.tensor([tokens[-lm.max_length :]])).logits[0, -1].argmax())
        if next_token == lm.eot_token_id:
            break
        tokens.append(next_token)
    free = generate(lm, prompt, until=[], max_gen_toks=12)
    assert free == lm.tok_decode(tokens[len(lm.tok_encode(prompt)) :])
    assert len(free) >= 4, f"debug model generated too little to test stopping: {free!r}"
    stop = free[2:4]
    stopped = generate(lm, prompt, until=[stop], max_gen_toks=12)
    assert stopped == free.split(stop)[0]
    assert stop not in stopped


def test_registered_for_lm_eval_and_built_from_a_model_args_string(checkpoint: Path) -> None:
    assert get_model("mhmoe") is MHMoELM
    lm = MHMoELM.create_from_arg_string(f"pretrained={checkpoint},max_gen_toks=7", {"batch_size": 2, "device": "cpu"})
    assert (lm.batch_size, lm.max_gen_toks, lm.device.type) == (2, 7, "cpu")
    # What `lm_eval --model mhmoe --model_args pretrained=PATH` does, once this module is imported.
    manager = TaskManager(include_path=str(render_local_tasks()), include_defaults=False)
    results = simple_evaluate(model="mhmoe", model_args=f"pretrained={checkpoint}", tasks=["mhmoe_mc"],
                              task_manager=manager, limit=2, batch_size=2, log_samples=False)
    assert results["config"]["checkpoint"] == str(checkpoint)
    assert 0.0 <= results["results"]["mhmoe_mc"]["acc,none"] <= 1.0


class Payload:
    """Unpickling this would create a marker file: a tampered checkpoint must never get that far."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def flipped_copy(checkpoint: Path, out: Path) -> Path:
    data = bytearray(checkpoint.read_bytes())
    for offset in range(40, 200):  # the zip's first entry header and the start of data.pkl
        data[offset] ^= 0xFF
    out.write_bytes(bytes(data))
    return out


@pytest.mark.parametrize("kind", ["flipped_bytes", "modified_weights", "pickle_payload", "torch_payload", "text_file",
                                  "plain_dict", "missing"])
def test_refuses_anything_but_an_mhmoe_checkpoint(kind: str, checkpoint: Path, tmp_path: Path) -> None:
    marker = tmp_path / "payload_ran"
    path = tmp_path / "model.ckpt"
    if kind == "flipped_bytes":
        flipped_copy(checkpoint, path)
    elif kind == "pickle_payload":
        path.write_bytes(pickle.dumps({"state_dict": Payload(marker)}))
    elif kind == "torch_payload":
        torch.save({"state_dict": {}, "hyper_parameters": {"config": Payload(marker)}}, path)
    elif kind == "text_file":
        path.write_text("these are not the weights you are looking for\n" * 20)
    elif kind == "plain_dict":
        torch.save({"weights": torch.zeros(3)}, path)
    elif kind == "modified_weights":  # a well-formed checkpoint whose tensors were edited after saving
        raw = torch.load(checkpoint, weights_only=True)
        first = next(iter(raw["state_dict"]))
        raw["state_dict"][first] = raw["state_dict"][first] + 1e-3
        torch.save(raw, path)
    with pytest.raises(CheckpointError) as err:
        MHMoELM(pretrained=str(path))
    message = str(err.value)
    assert str(path) in message and "\n" not in message
    expected = {"plain_dict": "not an mhmoe training checkpoint", "missing": "does not exist",
                "modified_weights": "do not match the digest"}
    assert expected.get(kind, "not a safe, readable torch checkpoint") in message
    assert not marker.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown when no GPU is present")
def test_cuda_without_a_gpu_is_a_clear_error(checkpoint: Path) -> None:
    with pytest.raises(ValueError, match="no CUDA GPU"):
        MHMoELM(pretrained=str(checkpoint), device="cuda")
