"""``medprobe mcq`` (also ``python -m medprobe.mcq``): the MCQ evaluation from the command line.

``--model``, ``--cases`` and ``--out`` are required; see docs/mcq.md.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from medprobe.cli.common import ArgumentParser
from medprobe.mcq.evaluate import evaluate, log_wandb
from medprobe.mcq.prompt import FORMATS
from medprobe.mcq.protocol import LOGLIK_NORMS, MODES

PROG = "medprobe mcq"


def build_parser() -> ArgumentParser:
    """The argument parser (mistakes raise :class:`medprobe.errors.ConfigError`)."""
    ap = ArgumentParser(
        prog=PROG,
        description="Few-shot multiple-choice answering with IDEFICS (the NEJM Image Challenge "
        "protocol): greedy, top-3 sampling and log-likelihood accuracy by difficulty.",
    )
    req = ap.add_argument_group("required arguments")
    req.add_argument("--model", required=True, help="hub id or local IDEFICS directory")
    req.add_argument("--cases", required=True, help="JSONL case file (docs/mcq.md)")
    req.add_argument("--out", required=True, help="output folder (rerun the same to resume)")
    ap.add_argument("--mode", default="all", choices=[*MODES, "all"], help="default: all")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32", "float16"])
    ap.add_argument("--quantization", default="none", choices=["none", "8bit", "4bit"])
    ap.add_argument("--device-map", default="auto", help="accelerate placement (auto, cpu, ...)")
    ap.add_argument("--format", default="paper", choices=list(FORMATS),
                    help="prompt format: paper (the authors' nejm_test.py turns; default) or "
                    "medprobe (ours: vignette, instruction, numbered answers; docs/mcq.md)")  # fmt: skip
    ap.add_argument("--loglik-norm", default="sum", choices=list(LOGLIK_NORMS),
                    help="which log-likelihood decides the loglik answer: sum (default) or mean "
                    "(per token, length-normalised); both are reported")  # fmt: skip
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--tracker", default="none", choices=["none", "wandb"])
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """Run the evaluation, print the report; returns the exit status (0, or 130 when
    interrupted: the same command resumes).

    Raises:
        medprobe.errors.ConfigError: bad arguments.
        medprobe.errors.McqError: bad case file, unknown mode, or an output folder of
            another run.
        medprobe.errors.ExtractorError: the model cannot be loaded.
    """
    from medprobe.extractors.idefics import IdeficsExtractor

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        ext = IdeficsExtractor(
            args.model,
            "Question: What's on this image? Answer:",  # unused: the MCQ prompts are built here
            dtype=args.dtype,
            quantization=args.quantization,
            device_map=args.device_map,
            truncate=False,
        )
        modes = list(MODES) if args.mode == "all" else [args.mode]
        summary = evaluate(
            ext,
            args.cases,
            args.out,
            modes=modes,
            max_new_tokens=args.max_new_tokens,
            seed=args.seed,
            n_boot=args.n_boot,
            format=args.format,
            loglik_norm=args.loglik_norm,
        )
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    out = Path(args.out)
    info = log_wandb(summary, out, tracker=args.tracker)  # tracker none: the no-op sink
    if info is not None:
        print(f"W&B run {info['id']} ({info['dir']})")
    print((out / "mcq_report.md").read_text())
    print(f"results: {out / 'mcq_results.jsonl'}  summary: {out / 'mcq_summary.json'}")
    return 0
