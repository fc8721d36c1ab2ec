"""Speed and memory of For-Value (``rlvr value``'s runner) on SmolLM2-135M-Instruct.

N training samples of 128 tokens (a 16-token prompt and a 112-token response, cut from generated text)
are valued against V validation samples of the same shape, through the JSONL runner: the validation mean
first, then the training file streamed in batches. Prints the training samples/s, the validation time and
the process's peak resident memory (``resource.getrusage``, model loading included). Issue target: 1,000
samples on 2 cores under 4 GiB.

    OMP_NUM_THREADS=2 python benchmarks/analysis.py --n 1000 --threads 2
    OMP_NUM_THREADS=1 python benchmarks/analysis.py --n 50 --threads 1     # a quick check
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

WORDS = ("the model reads each sample once and the value of a sample is how well its last layer gradient "
         "agrees with the gradient of the validation data while training data that disagrees is worth less "
         "numbers like 17 and 42 appear in sums answers questions proofs tables lists").split()


def text(rng: random.Random, n_words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n_words))


def write(path: Path, n: int, rng: random.Random) -> None:
    # word counts well above the token budgets: the runner cuts prompts to 16 and responses to 112 tokens
    path.write_text("".join(json.dumps({"prompt": text(rng, 40), "response": " " + text(rng, 160)}) + "\n" for _ in range(n)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000, help="training samples")
    ap.add_argument("--val", type=int, default=100, help="validation samples")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--reduce", default="mean", choices=["mean", "pairwise"])
    ap.add_argument("--vocab", default="all", choices=["all", "inputs", "topk"])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    args = ap.parse_args()

    import torch

    from rlvr_lab.analysis.value import ValueSettings, run_value
    from rlvr_lab.models.loading import load_model_and_tokenizer

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    loaded = load_model_and_tokenizer(args.model)
    load_s = time.perf_counter() - t0
    settings = ValueSettings(reduce=args.reduce, vocab=args.vocab, batch_size=args.batch_size, top_k=10,
                             max_prompt_tokens=16, max_response_tokens=112)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        rng = random.Random(0)
        write(folder / "train.jsonl", args.n, rng)
        write(folder / "val.jsonl", args.val, rng)
        summary = run_value(folder / "train.jsonl", folder / "val.jsonl", args.model, settings, out_dir=folder / "out",
                            loaded=loaded)
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 2**30  # ru_maxrss is in KiB on Linux
    print(f"For-Value, {args.model}: {summary['n_train']} training x {summary['n_val']} validation samples of 128 tokens "
          f"({args.reduce}, vocab {args.vocab}, batch {args.batch_size}), {args.threads} thread(s), torch {torch.__version__}")
    print(f"  training: {summary['train_samples_per_s']:.2f} samples/s ({summary['seconds_training']:.1f} s) | "
          f"validation mean: {summary['seconds_validation']:.1f} s | model load: {load_s:.1f} s | "
          f"peak RSS {peak_gib:.2f} GiB | truncated to 128 tokens: {summary['n_train_truncated']} of {summary['n_train']}")
    if sys.platform != "linux":
        print("  (peak RSS assumes ru_maxrss in KiB, as on Linux)")


if __name__ == "__main__":
    main()
