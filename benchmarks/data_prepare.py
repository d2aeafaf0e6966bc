"""Corpus preparation: `mhmoe data prepare` on a generated corpus with 1 and 2 tokenizing processes.

Run: .venv/bin/python benchmarks/data_prepare.py [--mb 200 | --gb 2] [--vocab 4096]

Generates JSON Lines files (32 MB each, Zipf-distributed synthetic words) in a temp folder, then runs the
real command as a subprocess on fresh MHMOE_HOMEs: first with BPE training (bounded sample, see
``mhmoe.data.tokenizer.BPE_SAMPLE_CHARS``), then tokenizing only (that tokenizer copied in) with
``--workers 1`` and ``--workers 2``. Prints wall time, CPU seconds, tokens/s, tokens/s per worker and
the peak RSS of the largest process; the load average beside them (a shared host is noisy).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
FILE_MB = 32
MEASURE = """
import resource, subprocess, sys, time
start = time.perf_counter()
done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(done.stdout, file=sys.stderr)
if done.returncode:
    print(done.stderr, file=sys.stderr)
    sys.exit(done.returncode)
print(time.perf_counter() - start, usage.ru_utime + usage.ru_stime, usage.ru_maxrss)
"""


def generate(folder: Path, megabytes: float) -> None:
    """``megabytes`` of JSON Lines documents of 50-500 words drawn from a Zipf law over 20k words."""
    rng = np.random.default_rng(0)
    words = np.array(["".join(rng.choice(list("etaoinshrdlucmfwypvbgk"), size=rng.integers(2, 10)))
                      for _ in range(20_000)])
    written, index = 0, 0
    while written < megabytes * 2**20:
        with open(folder / f"part{index:04d}.jsonl", "w") as f:
            size = 0
            while size < min(FILE_MB, megabytes) * 2**20:
                ids = np.minimum(rng.zipf(1.2, size=int(rng.integers(50, 500))), len(words)) - 1
                line = json.dumps({"text": " ".join(words[ids])}) + "\n"
                f.write(line)
                size += len(line)
        written, index = written + size, index + 1


def prepare(corpus: Path, home: Path, workers: int, vocab: int) -> tuple[float, float, int, str]:
    """(wall s, CPU s, peak RSS KiB, output) of one `mhmoe data prepare` process tree."""
    command = [sys.executable, "-m", "mhmoe.cli", "data", "prepare", "--preset", "debug", "--workers", str(workers),
               f"data.corpus={corpus}", "data.val_sets=[]", f"data.vocab_size={vocab}"]
    env = {**os.environ, "MHMOE_HOME": str(home), "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", MEASURE, *command], env=env, capture_output=True, text=True,
                          check=True)
    wall, cpu, rss = done.stdout.split()
    return float(wall), float(cpu), int(rss), done.stderr.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=200, help="corpus size in MB (default 200)")
    parser.add_argument("--gb", type=float, help="corpus size in GB (overrides --mb)")
    parser.add_argument("--vocab", type=int, default=4096, help="BPE vocabulary size (default 4096)")
    args = parser.parse_args()
    megabytes = args.gb * 1024 if args.gb else args.mb
    with tempfile.TemporaryDirectory(prefix="mhmoe-data-bench-") as tmp:
        corpus = Path(tmp) / "corpus"
        corpus.mkdir()
        began = time.perf_counter()
        generate(corpus, megabytes)
        size = sum(p.stat().st_size for p in corpus.iterdir())
        print(f"corpus: {size / 2**20:.0f} MB in {len(list(corpus.iterdir()))} files "
              f"(generated in {time.perf_counter() - began:.0f} s); load average {os.getloadavg()[0]:.1f}")
        wall, cpu, rss, out = prepare(corpus, Path(tmp) / "home-bpe", 2, args.vocab)
        print(f"BPE training + tokenizing, 2 workers: {wall:.1f} s wall, {cpu:.1f} CPU-s, peak RSS {rss / 1024:.0f} MB")
        for workers in (1, 2):
            home = Path(tmp) / f"home-{workers}"
            shutil.copytree(Path(tmp) / "home-bpe" / "tokenizers", home / "tokenizers")
            wall, cpu, rss, out = prepare(corpus, home, workers, args.vocab)
            tokens = int(out.split("corpus: ")[1].split(" tokens")[0].replace(",", ""))
            print(f"tokenizing, {workers} worker(s): {tokens:,} tokens, {wall:.1f} s wall, {cpu:.1f} CPU-s, "
                  f"{tokens / wall:,.0f} tokens/s, {tokens / wall / workers:,.0f} tokens/s per worker, "
                  f"{size / 2**20 / wall:.1f} MB/s, peak RSS {rss / 1024:.0f} MB; "
                  f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
