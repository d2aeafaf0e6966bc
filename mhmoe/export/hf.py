"""Export a checkpoint as a Hugging Face model folder (``mhmoe export CKPT DIR``).

The folder holds ``config.json`` (with ``auto_map`` to the copied ``modeling_mhmoe.py``),
``model.safetensors`` (weights only, no optimizer or loop state), ``generation_config.json`` and the
tokenizer as a ``PreTrainedTokenizerFast`` (``tokenizer.json`` + ``tokenizer_config.json``). Written
by transformers' own ``save_pretrained`` into a temporary folder next to DIR and renamed into place,
so a crash never leaves half a model where DIR is.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast
from transformers.convert_slow_tokenizer import bytes_to_unicode

from mhmoe.data.tokenizer import EOS_TOKEN, ByteTokenizer, TextTokenizer
from mhmoe.export.modeling_mhmoe import MHMoEConfig, MHMoEForCausalLM
from mhmoe.training.checkpoint import LoadedCheckpoint, load_checkpoint


class ExportError(ValueError):
    """The target folder cannot be written as asked; says why."""


def check_target(out_dir: Path, force: bool) -> None:
    """A folder that exists and holds anything is refused unless ``force``; so is a file."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"{out_dir} exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not force:
        raise ExportError(f"{out_dir} exists and is not empty; pass --force to replace it")


def byte_tokenizer_backend(tok: ByteTokenizer) -> Tokenizer:
    """mhmoe's byte tokenizer as a ``tokenizers`` one: byte b is id b (GPT-2's byte-level alphabet, no
    merges), end-of-text is ``tok.eos_id``."""
    vocab = {char: byte for byte, char in bytes_to_unicode().items()}
    vocab[EOS_TOKEN] = tok.eos_id
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens([EOS_TOKEN])
    return backend


def hf_tokenizer(tok: TextTokenizer, context_length: int) -> PreTrainedTokenizerFast:
    """The run's tokenizer for transformers: same ids, end-of-text as EOS, BOS (lm-eval's prefix for
    rolling windows, as in mhmoe) and padding; text that contains the end-of-text string is text, as in
    mhmoe (``split_special_tokens``)."""
    backend = byte_tokenizer_backend(tok) if isinstance(tok, ByteTokenizer) else Tokenizer.from_file(str(tok.path))
    eos = backend.id_to_token(tok.eos_id)
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=eos, bos_token=eos, pad_token=eos,
                                   model_max_length=context_length, split_special_tokens=True)


def context_length(loaded: LoadedCheckpoint) -> int:
    """The length the run trained on (at most the model's), mhmoe's default evaluation window."""
    return min(loaded.config.train.seq_len, loaded.net.model_cfg.max_seq_len)


def hf_model(loaded: LoadedCheckpoint) -> MHMoEForCausalLM:
    """The loaded net (its weights, not a copy) inside the transformers wrapper."""
    eos = loaded.tokenizer.eos_id
    config = MHMoEConfig.of(loaded.config.architecture, context_length(loaded),
                            eos_token_id=eos, bos_token_id=eos, pad_token_id=eos)
    return MHMoEForCausalLM(config, net=loaded.net)


def export_checkpoint(checkpoint: str | Path, out_dir: str | Path, *, force: bool = False) -> Path:
    """Write the Hugging Face folder of ``checkpoint`` to ``out_dir``; return ``out_dir``.

    Refuses (:class:`ExportError`, :class:`~mhmoe.training.checkpoint.CheckpointError`) before writing anything.
    """
    out_dir = Path(out_dir)
    check_target(out_dir, force)
    loaded = load_checkpoint(checkpoint)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.export-", dir=out_dir.parent))
    try:
        hf_model(loaded).save_pretrained(staging)
        hf_tokenizer(loaded.tokenizer, context_length(loaded)).save_pretrained(staging)
        name_tokenizer_class(staging / "tokenizer_config.json")
        share_like_new_files(staging)
        replace_folder(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def name_tokenizer_class(tokenizer_config: Path) -> None:
    """``PreTrainedTokenizerFast``, the name every transformers version knows (5.x writes its alias
    ``TokenizersBackend``, which 4.x cannot load)."""
    data = json.loads(tokenizer_config.read_text())
    data["tokenizer_class"] = "PreTrainedTokenizerFast"
    tokenizer_config.write_text(json.dumps(data, indent=2) + "\n")


def share_like_new_files(folder: Path) -> None:
    """The modes a new folder and files get under the umask (mkdtemp and the weights' writer use 0700/0600):
    an exported model is made to be shared."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for path in folder.iterdir():
        path.chmod(0o666 & ~umask)


def replace_folder(new: Path, target: Path) -> None:
    """Rename ``new`` to ``target``; an existing ``target`` is moved aside first and removed after."""
    if not target.exists():
        new.rename(target)
        return
    old = target.with_name(f".{target.name}.replaced-{new.name}")
    target.rename(old)
    new.rename(target)
    shutil.rmtree(old, ignore_errors=True)
