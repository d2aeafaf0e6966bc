"""The Lightning data module: deterministic random training windows and fixed validation windows.

Shapes: B batch, T ``seq_len``. Every batch is ``(input_ids_BT, targets_BT)`` (int64), targets shifted
by one token, cut from a window of T+1 tokens of a token stream.

Training: sample i of the run (i = step * B + row) starts at a position drawn by
``numpy.random.default_rng((seed, i))``, so the stream is a pure function of the seed and never
depends on what ran before. One epoch is exactly ``max_steps`` batches.

Micro-batches and ranks: the loader serves micro-batches of M sequences. With W data-parallel
ranks, optimizer step s is split into ``accumulate = B / (M W)`` rounds; in round a, rank w reads
samples ``s B + a M W + w M + [0, M)``. So every step still consumes samples ``s B .. s B + B - 1``
(the token stream, data order and tokens per step do not depend on M or W) and the ranks' shares are
disjoint. Lightning's DistributedSampler must be off (``use_distributed_sampler=False``).

Exact resume: ``state_dict()`` records the optimizer batches consumed (``trainer.global_step``) and
Lightning hands it back through ``load_state_dict()`` before it builds the dataloaders, so
``train_dataloader()`` resumes at that step's first micro-batch (checkpoints are only written at
optimizer-step boundaries). Its ``len()`` stays the full epoch (``max_steps x accumulate``), as for
Lightning's stateful loaders, because Lightning counts the restored batches towards the epoch; only
the remaining ones are yielded. Lightning still warns on such a resume ("resuming from a checkpoint
that ended before the epoch ended ... not resumable"): here it is harmless.

Weighted mixture (``data.corpus`` entries with weights): the same generator first draws which source
sample i comes from, in proportion to the weights, then its start in that source's stream.

Validation: consecutive non-overlapping windows from the start of each set (evenly strided when capped
by ``val_max_windows``), identical for every run; one loader per set in ``val_names`` order, batches
of M windows, rank w taking windows w, w + W, ... (the token sums are reduced over ranks).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset, Sampler

from mhmoe.config.data import DataConfig, DataError
from mhmoe.data.sources import Source, train_source, train_stream_sources, val_sources
from mhmoe.data.tokenizer import TextTokenizer, build_tokenizer
from mhmoe.data.tokens import token_stream

Batch = tuple[torch.Tensor, torch.Tensor]


def train_window_start(seed: int, sample: int, n_tokens: int, seq_len: int) -> int:
    """Start of training sample ``sample``: a pure function of (seed, sample)."""
    return int(np.random.default_rng((seed, sample)).integers(0, n_tokens - seq_len))


def mixture_window(seed: int, sample: int, sizes: list[int], probabilities: np.ndarray,
                   seq_len: int) -> tuple[int, int]:
    """(source, start) of training sample ``sample`` of a weighted mixture: a pure function of (seed, sample)."""
    rng = np.random.default_rng((seed, sample))
    source = int(rng.choice(len(sizes), p=probabilities))
    return source, int(rng.integers(0, sizes[source] - seq_len))


class Mixture:
    """Training streams of a weighted mixture; ``len()`` is their total tokens."""

    def __init__(self, streams: Sequence[np.ndarray], weights: tuple[float, ...]) -> None:
        self.streams = streams
        self.probabilities = np.asarray(weights, dtype=np.float64) / sum(weights)

    def __len__(self) -> int:
        return sum(len(stream) for stream in self.streams)


def val_window_starts(n_tokens: int, seq_len: int, max_windows: int) -> np.ndarray:
    """Starts of the consecutive windows (each T+1 tokens, overlapping by the shifted target token),
    keeping ``max_windows`` evenly strided ones when there are more (0 = keep all)."""
    count = (n_tokens - 1) // seq_len
    index = np.arange(count)
    if 0 < max_windows < count:
        index = (np.arange(max_windows) * count) // max_windows
    return index * seq_len


def train_sample_rows(micro: int, *, batch_size: int, micro_batch_size: int, world_size: int = 1,
                      rank: int = 0) -> range:
    """Sample indices of this rank's micro-batch ``micro`` (its count since the run started)."""
    accumulate = batch_size // (micro_batch_size * world_size)
    step, round_ = divmod(micro, accumulate)
    first = step * batch_size + (round_ * world_size + rank) * micro_batch_size
    return range(first, first + micro_batch_size)


def _windows(stream: np.ndarray, starts: np.ndarray | list[int], seq_len: int) -> Batch:
    return _shifted([stream[s : s + seq_len + 1] for s in starts])


def _shifted(windows: list[np.ndarray]) -> Batch:
    window_BT1 = torch.from_numpy(np.stack(windows).astype(np.int64))
    return window_BT1[:, :-1].contiguous(), window_BT1[:, 1:].contiguous()


class TrainBatches(Dataset):
    """Item m is this rank's training micro-batch m of the run (any m >= 0)."""

    def __init__(self, stream: np.ndarray | Mixture, *, seq_len: int, batch_size: int, seed: int,
                 micro_batch_size: int | None = None, world_size: int = 1, rank: int = 0) -> None:
        self.stream, self.seq_len, self.batch_size, self.seed = stream, seq_len, batch_size, seed
        self.layout = {"batch_size": batch_size, "micro_batch_size": micro_batch_size or batch_size // world_size,
                       "world_size": world_size, "rank": rank}

    def __getitem__(self, micro: int) -> Batch:
        samples = train_sample_rows(micro, **self.layout)
        if isinstance(self.stream, Mixture):
            streams, sizes = self.stream.streams, [len(s) for s in self.stream.streams]
            picks = [mixture_window(self.seed, i, sizes, self.stream.probabilities, self.seq_len) for i in samples]
            return _shifted([streams[k][s : s + self.seq_len + 1] for k, s in picks])
        starts = [train_window_start(self.seed, sample, len(self.stream), self.seq_len) for sample in samples]
        return _windows(self.stream, starts, self.seq_len)


class ResumeSampler(Sampler[int]):
    """Batch indices ``start..stop-1``; ``len()`` is ``stop``, the whole epoch (see module docstring)."""

    def __init__(self, start: int, stop: int) -> None:
        self.start, self.stop = start, stop

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start, self.stop))

    def __len__(self) -> int:
        return self.stop


class ValBatches(Dataset):
    """Item k is the k-th batch of fixed validation windows."""

    def __init__(self, stream: np.ndarray, starts: np.ndarray, *, seq_len: int, batch_size: int) -> None:
        self.stream, self.starts, self.seq_len, self.batch_size = stream, starts, seq_len, batch_size

    def __len__(self) -> int:
        return -(-len(self.starts) // self.batch_size)

    def __getitem__(self, k: int) -> Batch:
        return _windows(self.stream, self.starts[k * self.batch_size : (k + 1) * self.batch_size], self.seq_len)


class MHMoEDataModule(LightningDataModule):
    """Tokenizer, token streams and loaders for one run; ``setup`` is idempotent and cache-backed."""

    def __init__(self, data: DataConfig, *, seq_len: int, batch_size: int, seed: int, max_steps: int,
                 val_max_windows: int | None = None, micro_batch_size: int | None = None) -> None:
        super().__init__()
        for name, value in (("seq_len", seq_len), ("batch_size", batch_size), ("max_steps", max_steps)):
            if value <= 0:
                raise ValueError(f"{name}={value} must be > 0")
        if seed < 0:
            raise ValueError(f"seed={seed} must be >= 0 (it seeds numpy's SeedSequence)")
        if val_max_windows is not None and val_max_windows < 0:
            raise ValueError(f"val_max_windows={val_max_windows} must be >= 0 (0 = every window)")
        if micro_batch_size is not None and (micro_batch_size <= 0 or batch_size % micro_batch_size):
            raise ValueError(f"micro_batch_size={micro_batch_size} must be > 0 and divide batch_size={batch_size}")
        self.micro_batch_size = micro_batch_size
        """Sequences per rank per forward (None = batch_size / ranks, no accumulation)."""
        self.data = data
        self.seq_len, self.batch_size, self.seed, self.max_steps = seq_len, batch_size, seed, max_steps
        self.val_max_windows = data.val_max_windows if val_max_windows is None else val_max_windows
        self.consumed_batches = 0
        self._train_source: Source | None = None
        self._tokenizer: TextTokenizer | None = None
        self._train_stream: np.ndarray | Mixture | None = None
        self._val_streams: dict[str, np.ndarray] | None = None

    # ---- building ---------------------------------------------------------------------------------

    def prepare_data(self) -> None:
        """Download, extract, train the tokenizer and tokenize: every cache filled once."""
        self._build()

    def setup(self, stage: str | None = None) -> None:
        self._build()

    def _build(self) -> None:
        if self._val_streams is not None:
            return
        tokenizer = self.tokenizer
        sources = train_stream_sources(self.data) if self.data.train_weights() is not None else [self._source()]
        trains = []
        for source in sources:
            trains.append(token_stream(source, tokenizer))
            if len(trains[-1]) < self.seq_len + 1:
                raise DataError(f"training corpus {source.spec!r} has {len(trains[-1])} tokens, fewer than one "
                                f"window of {self.seq_len + 1} (seq_len + 1)")
        weights = self.data.train_weights()
        train = trains[0] if weights is None else Mixture(trains, weights)
        streams: dict[str, np.ndarray] = {}
        for name, source in val_sources(self.data).items():
            stream = token_stream(source, tokenizer)
            if len(stream) < self.seq_len + 1:
                raise DataError(f"validation set {name!r} has {len(stream)} tokens, fewer than one window of "
                                f"{self.seq_len + 1} tokens (seq_len={self.seq_len} + 1); use a longer set "
                                "or a shorter seq_len")
            streams[name] = stream
        self._train_stream, self._val_streams = train, streams

    def _source(self) -> Source:
        if self._train_source is None:
            self._train_source = train_source(self.data)
        return self._train_source

    @property
    def tokenizer(self) -> TextTokenizer:
        """The run's tokenizer (built, or trained once per corpus, on first use)."""
        if self._tokenizer is None:
            self._tokenizer = build_tokenizer(self.data, self._source())
        return self._tokenizer

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    @property
    def val_names(self) -> list[str]:
        return self.data.val_names

    @property
    def train_stream(self) -> np.ndarray | Mixture:
        self._build()
        assert self._train_stream is not None
        return self._train_stream

    @property
    def val_streams(self) -> dict[str, np.ndarray]:
        self._build()
        assert self._val_streams is not None
        return self._val_streams

    # ---- loaders ----------------------------------------------------------------------------------

    def _ranks(self) -> tuple[int, int]:
        """(world size, this rank) from the attached trainer; (1, 0) without one."""
        if self.trainer is None:
            return 1, 0
        return self.trainer.world_size, self.trainer.global_rank

    def micro_layout(self) -> tuple[int, int]:
        """(micro-batch size, micro-batches accumulated per optimizer step) on each rank."""
        world, _ = self._ranks()
        if self.batch_size % world:
            raise ValueError(f"batch_size={self.batch_size} is not divisible by {world} data-parallel ranks")
        micro = self.micro_batch_size or self.batch_size // world
        if self.batch_size % (micro * world):
            raise ValueError(f"micro_batch_size={micro} x {world} ranks does not divide batch_size={self.batch_size}")
        return micro, self.batch_size // (micro * world)

    def train_dataloader(self) -> DataLoader:
        micro, accumulate = self.micro_layout()
        if self.trainer is not None and self.trainer.accumulate_grad_batches != accumulate:
            raise ValueError(f"the data module serves {accumulate} micro-batches per optimizer step but the trainer "
                             f"accumulates {self.trainer.accumulate_grad_batches}")
        world, rank = self._ranks()
        batches = TrainBatches(self.train_stream, seq_len=self.seq_len, batch_size=self.batch_size, seed=self.seed,
                               micro_batch_size=micro, world_size=world, rank=rank)
        sampler = ResumeSampler(self.consumed_batches * accumulate, self.max_steps * accumulate)
        # batch_size=None: each item already is a batch; num_workers=0 keeps the order trivially exact.
        return DataLoader(batches, batch_size=None, sampler=sampler, num_workers=0)

    def val_dataloader(self) -> list[DataLoader]:
        micro, _ = self.micro_layout()
        world, rank = self._ranks()
        loaders = []
        for name in self.val_names:
            stream = self.val_streams[name]
            starts = val_window_starts(len(stream), self.seq_len, self.val_max_windows)
            if len(starts) < world:  # Lightning refuses a rank without a validation batch
                raise DataError(f"validation set {name!r} has {len(starts)} windows, fewer than the {world} "
                                "data-parallel ranks; raise data.val_max_windows or use a longer set")
            batches = ValBatches(stream, starts[rank::world], seq_len=self.seq_len, batch_size=micro)
            loaders.append(DataLoader(batches, batch_size=None, shuffle=False, num_workers=0))
        return loaders

    # ---- exact resume -----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Batches consumed so far: saved in every Lightning checkpoint."""
        consumed = self.trainer.global_step if self.trainer is not None else self.consumed_batches
        return {"consumed_batches": int(consumed)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Called by Lightning on restore, before the dataloaders are built."""
        self.consumed_batches = int(state_dict["consumed_batches"])
