"""The `score-jax` command line: train, eval, nfe-report, sample, likelihood, fid-stats, convert.

Every subcommand takes `--config FILE` plus any number of `--config.a.b=VALUE` overrides. The
work itself lives in the library; this file only parses arguments and dispatches, importing
each subcommand's module lazily so that `--help` is instant.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from score_jax import run_record
from score_jax.config import ConfigError, load_config
from score_jax.errors import EXIT_PREEMPTED, TrainingPreempted, first_line
from score_jax.hugepages import reexec_with_hugepages

_DESCRIPTION = "Score-based generative modelling through SDEs, in JAX."


# Kept here as text so that --help needs no JAX import; tests/test_cli_errors.py holds it equal
# to score_jax.sampling.get_sampler.METHODS.
SAMPLING_METHODS = ("pc", "ode", "sde", "dpm_solver++", "dpm_solver", "heun")
_OVERRIDES_HELP = (
    "Any config value can be overridden with --config.section.key=VALUE, e.g. "
    "--config.training.batch_size=64 or --config.model.kernels=xla; an unknown key or a value "
    "of the wrong type is refused. Samplers: --config.sampling.method="
    + "|".join(SAMPLING_METHODS)
    + " (with sampling.steps, sampling.predictor / corrector for pc)."
)
# Libraries that log every file and probe at INFO (Orbax through absl; JAX's backend search).
_CHATTY_LOGGERS = ("absl", "jax._src.xla_bridge", "jax._src.distributed", "orbax")


def _add_common(parser: argparse.ArgumentParser, workdir: bool = True) -> None:
    parser.epilog = _OVERRIDES_HELP
    parser.add_argument("--config", required=True, help="ml_collections config file (.py)")
    if workdir:
        parser.add_argument("--workdir", required=True, help="run directory (checkpoints, logs)")
    parser.add_argument(
        "--verbose", action="store_true", help="also show the libraries' INFO logs (Orbax, JAX)"
    )
    group = parser.add_argument_group("multi-host (or set them in the environment)")
    group.add_argument("--coordinator_address", default=os.environ.get("SCORE_JAX_COORDINATOR"))
    group.add_argument("--num_processes", type=int, default=_env_int("SCORE_JAX_NUM_PROCESSES"))
    group.add_argument("--process_id", type=int, default=_env_int("SCORE_JAX_PROCESS_ID"))
    group.add_argument(
        "--init_timeout",
        type=int,
        default=_env_int("SCORE_JAX_INIT_TIMEOUT") or 120,
        help="seconds to wait for every process to join (default 120)",
    )
    group.add_argument(
        "--heartbeat_timeout",
        type=int,
        default=_env_int("SCORE_JAX_HEARTBEAT_TIMEOUT") or 60,
        help="seconds without a heartbeat before a process counts as dead and the run stops "
        "(default 60)",
    )


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value else None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="score-jax",
        description=_DESCRIPTION,
        epilog=_OVERRIDES_HELP,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("train", help="train a score model (resumes from --workdir)")
    _add_common(p)

    p = sub.add_parser("eval", help="evaluation loss, bits/dim and FID/IS/KID of checkpoints")
    _add_common(p)
    p.add_argument("--eval_folder", default="eval", help="subfolder of workdir for results")

    p = sub.add_parser("nfe-report", help="sample quality against NFE for several samplers")
    _add_common(p)
    p.add_argument("--samplers", nargs="+", required=True, metavar="METHOD[-ORDER]:NFE[,NFE]",
                   help="e.g. pc:1000 dpm_solver++:10,20 dpm_solver-3:20 heun:35")  # fmt: skip
    p.add_argument("--num", type=int, default=2000, help="samples per setting (default 2000)")
    p.add_argument("--batch_size", type=int, default=None, help="default: eval.batch_size")
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
    p.add_argument("--out_folder", default="nfe_report", help="subfolder of workdir")
    p.add_argument("--classifier_score", action="store_true",
                   help="also score samples with a pixel classifier fitted to the labelled "
                        "training split (small datasets such as the digits)")  # fmt: skip

    p = sub.add_parser("sample", help="draw samples from a checkpoint's EMA weights")
    _add_common(p)
    p.add_argument("--num", type=int, required=True, help="number of samples")
    p.add_argument("--out", required=True, help="output .npz (a PNG grid is written beside it)")
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")

    p = sub.add_parser("likelihood", help="bits/dim of a checkpoint on a dataset split")
    _add_common(p)
    p.add_argument("--split", default="test", help="dataset split (default: test)")
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")

    p = sub.add_parser("fid-stats", help="Inception statistics of a dataset's training split")
    _add_common(p, workdir=False)
    p.add_argument("--out", required=True, help="output .npz with mu, sigma (pytorch-fid format)")

    p = sub.add_parser("convert", help="convert an official score_sde_pytorch checkpoint")
    _add_common(p)
    p.add_argument("--checkpoint", required=True, help="official .pth checkpoint file")
    _add_controllable(sub)
    return parser


def _add_controllable(sub) -> None:
    """train-classifier, inpaint, colorize, cond-sample (score_jax.controllable_cli)."""
    p = sub.add_parser("train-classifier", help="train a noise-conditional classifier")
    _add_common(p)
    images = "PNG or .npz of images in [0, 1] (uint8 or float)"
    for name, what in (("inpaint", "fill the unknown pixels"), ("colorize", "color gray images")):
        p = sub.add_parser(name, help=f"{what} of images with a score model")
        _add_common(p)
        p.add_argument("--image", required=True, help=images)
        if name == "inpaint":
            p.add_argument("--mask", required=True, help="mask file (nonzero = known) or a half")
        p.add_argument("--num_samples", type=int, default=4, help="samples per image")
    p = sub.add_parser("cond-sample", help="class-conditional samples guided by a classifier")
    _add_common(p)
    p.add_argument("--classifier_config", required=True, help="the classifier's config file")
    p.add_argument("--classifier_workdir", required=True, help="the classifier's run directory")
    p.add_argument("--class", dest="label", type=int, required=True, help="class index")
    p.add_argument("--num", type=int, default=64, help="number of samples")
    p.add_argument("--scale", type=float, default=1.0, help="classifier guidance scale")
    for p in (sub.choices[n] for n in ("inpaint", "colorize", "cond-sample")):
        p.add_argument("--out", required=True, help="output PNG grid (samples: .npz beside it)")
        p.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
        p.add_argument("--seed", type=int, default=0, help="random seed")


def _initialize_distributed(args: argparse.Namespace) -> None:
    if args.coordinator_address is None:
        return
    import jax

    # If a process never joins, JAX's coordination service aborts this one with a C++ check
    # failure after the timeout (no Python exception to catch): say first what is waited for.
    print(
        f"score-jax: process {args.process_id} of {args.num_processes} joining the run at "
        f"{args.coordinator_address}; every process must join within --init_timeout="
        f"{args.init_timeout} s, and one silent for --heartbeat_timeout={args.heartbeat_timeout} "
        "s stops the run.",
        file=sys.stderr,
        flush=True,
    )
    try:
        jax.distributed.initialize(
            coordinator_address=args.coordinator_address,
            num_processes=args.num_processes,
            process_id=args.process_id,
            initialization_timeout=args.init_timeout,
            heartbeat_timeout_seconds=args.heartbeat_timeout,
        )
    except Exception as err:  # noqa: BLE001 -- the coordination service raises XlaRuntimeError
        raise ValueError(
            f"Process {args.process_id} of {args.num_processes} could not join the run at "
            f"{args.coordinator_address} ({first_line(err, 300)}). Start every process within "
            f"--init_timeout={args.init_timeout} s with the same --coordinator_address and "
            "--num_processes and a distinct --process_id."
        ) from None


def _run(args: argparse.Namespace, config) -> None:
    # Each command imports JAX and its modules only here: --help stays instant, and the CPU-only
    # re-execution with huge pages happens before JAX is loaded.
    workdir = getattr(args, "workdir", None)
    if workdir is not None and os.path.exists(workdir) and not os.path.isdir(workdir):
        raise ValueError(f"--workdir {workdir} is a file; give a folder (it is created if absent).")
    if workdir is not None and args.command not in ("train", "convert", "train-classifier"):
        run_record.warn_if_different(workdir, config)
    if args.command == "train":
        from score_jax.report import report_after_training
        from score_jax.score_model import build_score_model
        from score_jax.train.loop import train

        score_model = build_score_model(config)
        on_finish = report_after_training(config, args.workdir, score_model)
        train(config, args.workdir, score_model, on_finish)
    elif args.command == "eval":
        from score_jax.evaluation.run import evaluate

        evaluate(config, args.workdir, args.eval_folder)
    elif args.command == "nfe-report":
        from score_jax.evaluation.nfe_report import nfe_report

        nfe_report(config, args.workdir, args.samplers, args.num, args.out_folder, args.step,
                   args.batch_size, args.classifier_score)  # fmt: skip
    elif args.command == "sample":
        from score_jax.evaluation.sample import sample_to_file

        sample_to_file(config, args.workdir, args.num, args.out, step=args.step)
    elif args.command == "likelihood":
        from score_jax.evaluation.bpd import run_likelihood

        run_likelihood(config, args.workdir, args.split, step=args.step)
    elif args.command == "fid-stats":
        from score_jax.evaluation.stats import compute_dataset_stats

        compute_dataset_stats(config, args.out)
    elif args.command == "convert":
        from score_jax.checkpoints import convert_official_checkpoint

        convert_official_checkpoint(config, args.checkpoint, args.workdir)
        run_record.record_config(args.workdir, config)
    elif args.command in ("train-classifier", "inpaint", "colorize", "cond-sample"):
        from score_jax.controllable_cli import run_command

        run_command(args, config)


def main(argv: Sequence[str] | None = None) -> int:
    from_command_line = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    if from_command_line and not {"-h", "--help"} & set(argv):
        reexec_with_hugepages()  # a no-op where JAX will not run on the CPU
    parser = build_parser()
    overrides = [a for a in argv if a.startswith("--config.")]
    args = parser.parse_args([a for a in argv if not a.startswith("--config.")])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if not args.verbose:
        for name in _CHATTY_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
    try:
        config = load_config(args.config, overrides)
    except ConfigError as err:
        parser.exit(2, f"score-jax {args.command}: error: {err}\n")
    try:
        _initialize_distributed(args)
        _run(args, config)
    except (FileNotFoundError, ValueError) as err:
        # Errors we raise for bad input carry a message meant for the user; no traceback.
        if os.environ.get("SCORE_JAX_TRACEBACK"):
            raise
        parser.exit(1, f"score-jax {args.command}: error: {err}\n")
    except TrainingPreempted as err:
        parser.exit(EXIT_PREEMPTED, f"score-jax {args.command}: {err}; rerun to resume\n")
    except KeyboardInterrupt:
        parser.exit(130, f"score-jax {args.command}: interrupted\n")
    return 0
