"""Build an offline human / machine text set for `rlvr detect`, and turn a detect run into a results summary.

    python scripts/build_detect_set.py build --n 150 --out src/rlvr_lab/analysis/data/detect_offline.jsonl
    rlvr detect src/rlvr_lab/analysis/data/detect_offline.jsonl --model smollm2-135m-instruct --out DIR
    python scripts/build_detect_set.py summary DIR --data THE.jsonl --out experiments/measurements/detect_smollm2.json

Human-written text. Prose paragraphs from the documentation this machine's packages ship: the Debian
package docs under ``/usr/share/doc`` (READMEs, FAQs, NEWS, protocol specifications; gzip read directly)
and the long descriptions in the ``METADATA`` of the Python packages installed in this environment.
Changelogs, copyright files, licence texts and code are left out: a paragraph is kept when it has at
least 50 words and 60 SmolLM2 tokens, starts with a capital letter, ends with a full stop, has at least
two sentences, is at least 90% letters and spaces, mentions no licence terms, and holds no URL, path,
code or markup characters. Duplicates (same first 80 characters, case-folded) are dropped, at most
``--per-package`` paragraphs come from one package, and the set is drawn from the rest with a fixed seed.
Each paragraph is cut to its first ``--max-words`` words.

Machine-generated text. The Fast-DetectGPT protocol (arXiv 2310.05130) that Lastde (arXiv 2410.06072)
follows: SmolLM2-135M-Instruct continues the first 30 tokens of each human text, as plain text (no chat
template), sampling from the full distribution with temperature 1 (no top-k, no top-p), with the end
token blocked until the continuation is as long as the rest of the human text (the protocol's
``min_length``). Each pair is then cut to the same number of words, the shorter of the two. Generation
uses transformers' ``generate`` on unpadded batches (every prompt is exactly 30 tokens), seeded per batch.

Output: one JSON object a line, ``{"text", "label" (0 human, 1 machine), "source", "pair"}``.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import random
import re
import sys
import time
from collections import defaultdict
from pathlib import Path

PREFIX_TOKENS = 30
DOC_ROOT = Path("/usr/share/doc")
SKIPPED_NAMES = ("changelog", "copyright", "license", "licence", "copying", "authors", "thanks")
SKIPPED_SUFFIXES = (".c", ".h", ".pl", ".png", ".gif", ".jpg", ".svg", ".css", ".js", ".sh", ".xml", ".awk",
                    ".cocci", ".html", ".htm", ".py", ".json", ".pdf", ".patch", ".diff")
MARKUP = re.compile(r"(https?://|www\.|```|::|>>>|\$ |[{}<>|\\@#=_`~\[\]*]|\.py\b|/usr/|/etc/|--|\t)")
LICENCE_WORDS = re.compile(r"licen[cs]e|warrant|copyright|permission is|free software|\bGNU\b|redistribut|"
                           r"merchantab|liabilit|patent|trademark", re.IGNORECASE)


def read_text(path: Path) -> str | None:
    """The file as UTF-8 text (gzip read directly); None for binary or undecodable files."""
    try:
        raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
        return raw.decode("utf-8")
    except (OSError, UnicodeDecodeError, EOFError):
        return None


def candidate_files(site_packages: list[Path]) -> list[tuple[str, Path]]:
    """``(package, path)`` of every readable documentation file, sorted."""
    files: list[tuple[str, Path]] = []
    if DOC_ROOT.is_dir():
        for path in sorted(DOC_ROOT.rglob("*")):
            name = path.name.lower()
            stem = name[:-3] if name.endswith(".gz") else name
            if (not path.is_file() or any(word in name for word in SKIPPED_NAMES)
                    or stem.endswith(SKIPPED_SUFFIXES)):
                continue
            files.append((f"deb:{path.relative_to(DOC_ROOT).parts[0]}", path))
    for root in site_packages:
        for path in sorted(root.glob("*.dist-info/METADATA")):
            name = path.parent.name.split("-")[0]
            if name.replace("-", "_").lower() != "rlvr_lab":  # this project's own README is not a human sample
                files.append((f"pypi:{name}", path))
    return files


def paragraphs(text: str) -> list[str]:
    """Blank-line separated blocks with their lines joined and whitespace collapsed."""
    out = []
    for block in re.split(r"\n\s*\n", text):
        para = re.sub(r"\s+", " ", " ".join(line.strip() for line in block.strip().splitlines())).strip()
        if para:
            out.append(para)
    return out


def is_prose(para: str) -> bool:
    """The word-level filter of the module docstring (the token count is checked later)."""
    words = para.split()
    if len(words) < 50 or MARKUP.search(para) or LICENCE_WORDS.search(para):
        return False
    if not para[0].isupper() or not para.endswith("."):
        return False
    if sum(c.isalpha() or c == " " for c in para) < 0.9 * len(para):
        return False
    if sum(para.count(mark) for mark in ".!?") < 2:
        return False
    return sum(w.isupper() and len(w) > 1 for w in words) <= 0.1 * len(words)  # not a spec of CONSTANTS


def collect_human(tokenizer, *, n: int, per_package: int, max_words: int, seed: int) -> list[dict[str, str]]:
    """Pick ``n`` human paragraphs (module docstring), each ``{"text", "source"}``."""
    site_packages = [Path(p) for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()]
    by_package: dict[str, list[dict[str, str]]] = defaultdict(list)
    seen: set[str] = set()
    for package, path in candidate_files(site_packages):
        text = read_text(path)
        if text is None:
            continue
        for para in paragraphs(text):
            key = para.casefold()[:80]
            if key in seen or not is_prose(para):
                continue
            seen.add(key)
            cut = " ".join(para.split()[:max_words])
            if len(tokenizer(cut).input_ids) < 60:
                continue
            by_package[package].append({"text": cut, "source": f"{package}:{path.name}"})
    rng = random.Random(seed)
    pool = []
    for package in sorted(by_package):
        items = by_package[package]
        rng.shuffle(items)
        pool.extend(items[:per_package])
    rng.shuffle(pool)
    if len(pool) < n:
        print(f"only {len(pool)} paragraphs qualify; using all of them", file=sys.stderr)
    return pool[:n]


def generate_continuations(model, tokenizer, humans: list[dict[str, str]], *, batch_size: int, seed: int,
                           log_every: int = 1) -> list[str]:
    """SmolLM2 continuations of the first 30 tokens of each human text (module docstring), prefix included."""
    import torch

    ids = [tokenizer(h["text"]).input_ids for h in humans]
    order = sorted(range(len(humans)), key=lambda i: len(ids[i]))  # similar lengths share a batch
    out: list[str] = [""] * len(humans)
    started = time.perf_counter()
    for b, begin in enumerate(range(0, len(order), batch_size)):
        batch = order[begin:begin + batch_size]
        new_tokens = [max(PREFIX_TOKENS, len(ids[i]) - PREFIX_TOKENS) for i in batch]
        prompt = torch.tensor([ids[i][:PREFIX_TOKENS] for i in batch])  # (B, 30), no padding needed
        torch.manual_seed(seed * 100_003 + b)
        with torch.no_grad():
            generated = model.generate(
                input_ids=prompt, attention_mask=torch.ones_like(prompt), do_sample=True, temperature=1.0,
                top_k=0, top_p=1.0, max_new_tokens=max(new_tokens), min_new_tokens=max(new_tokens),
                pad_token_id=tokenizer.pad_token_id)
        for row, (i, k) in enumerate(zip(batch, new_tokens)):
            out[i] = tokenizer.decode(generated[row, :PREFIX_TOKENS + k], skip_special_tokens=True)
        if (b + 1) % log_every == 0:
            print(f"generated {begin + len(batch)}/{len(order)} ({time.perf_counter() - started:.0f}s)", file=sys.stderr)
    return out


def equal_words(a: str, b: str) -> tuple[str, str]:
    """Both texts cut to the word count of the shorter one (Fast-DetectGPT's pair trimming)."""
    wa, wb = a.split(), b.split()
    k = min(len(wa), len(wb))
    return " ".join(wa[:k]), " ".join(wb[:k])


def build(args: argparse.Namespace) -> None:
    import torch

    from rlvr_lab.models.loading import load_model_and_tokenizer

    torch.set_num_threads(args.threads)
    loaded = load_model_and_tokenizer(args.model)
    humans = collect_human(loaded.tokenizer, n=args.n, per_package=args.per_package, max_words=args.max_words,
                           seed=args.seed)
    print(f"{len(humans)} human paragraphs from {len({h['source'].split(':')[1] for h in humans})} packages",
          file=sys.stderr)
    machines = generate_continuations(loaded.model, loaded.tokenizer, humans, batch_size=args.batch_size,
                                      seed=args.seed)
    rows = []
    for pair, (human, machine) in enumerate(zip(humans, machines)):
        h, m = equal_words(human["text"], machine)
        rows.append({"text": h, "label": 0, "source": human["source"], "pair": pair})
        rows.append({"text": m, "label": 1, "source": f"{args.model}:T=1:prefix{PREFIX_TOKENS}", "pair": pair})
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(f"wrote {len(rows)} texts to {out} ({out.stat().st_size / 1024:.0f} KB)", file=sys.stderr)


def summary(args: argparse.Namespace) -> None:
    """The summary of a `rlvr detect` run with the data set's provenance, as one results JSON."""
    detect = json.loads((Path(args.detect_dir) / "detect.json").read_text())
    records = [json.loads(line) for line in (Path(args.detect_dir) / "records.jsonl").read_text().splitlines()]
    data = Path(args.data)
    verdicts, class_means = {}, {}
    for method, row in detect["methods"].items():
        if row["auroc"] is None:
            verdicts[method] = "no AUROC"
            continue
        low, high = row["ci95"]
        verdicts[method] = ("separates (interval above 0.5)" if low > 0.5 else
                            "reversed (interval below 0.5)" if high < 0.5 else "not distinguishable from chance")
        class_means[method] = {
            name: sum(v) / len(v) for name, label in (("human", 0), ("machine", 1))
            if (v := [r["scores"][method] for r in records if r["label"] == label and r["scores"][method] is not None])
        }
    result = {
        "question": "Do Lastde / Lastde++ (arXiv 2410.06072) and the likelihood baselines, scored white-box by "
                    "SmolLM2-135M-Instruct, tell its temperature-1 continuations from human documentation prose?",
        "data": {"path": str(data), "sha256": hashlib.sha256(data.read_bytes()).hexdigest(),
                 "built_with": args.build_command},
        "command": args.detect_command,
        "verdict": verdicts,
        "class_mean_scores": class_means,
        **detect,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    b = commands.add_parser("build", help="collect human paragraphs and generate the machine continuations")
    b.add_argument("--out", default="src/rlvr_lab/analysis/data/detect_offline.jsonl")
    b.add_argument("--n", type=int, default=150, help="human texts (as many machine texts are generated)")
    b.add_argument("--model", default="smollm2-135m-instruct", help="generator (any load_model_and_tokenizer source)")
    b.add_argument("--per-package", type=int, default=3, help="most paragraphs taken from one package")
    b.add_argument("--max-words", type=int, default=110, help="human paragraphs are cut to this many words")
    b.add_argument("--batch-size", type=int, default=16)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--threads", type=int, default=1)
    s = commands.add_parser("summary", help="write a results JSON from a `rlvr detect --out DIR` run")
    s.add_argument("detect_dir")
    s.add_argument("--data", required=True, help="the JSONL that was scored")
    s.add_argument("--out", required=True)
    s.add_argument("--build-command", default="")
    s.add_argument("--detect-command", default="")
    args = parser.parse_args(argv)
    (build if args.command == "build" else summary)(args)


if __name__ == "__main__":
    main()
