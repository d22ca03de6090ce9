"""Command line: `digitcmp list | train | reproduce | report | predict`.

Engine functions return results; this module parses arguments, prints, and turns every expected
failure (bad names, bad numbers, bad files) into one line on stderr with exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from . import __version__
from .config import AUGMENTATIONS, DEFAULT_LR, OPTIMIZERS, RunConfig
from .experiments import BEYOND_EXPERIMENTS, DEFAULT_SEEDS, EXPERIMENTS, PRESETS, STUDY_EXPERIMENTS
from .models import ACTIVATIONS, ARCHITECTURES, COMPARISONS, TOWERS
from .sweep import ENGINES

DEFAULT_DB, DEFAULT_OUT = "results/digitcmp.sqlite", "results"
QUICK_DB, QUICK_OUT = "results/quick.sqlite", "results/quick"


class UsageError(Exception):
    """A bad command line or input: reported as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line instead of usage + message
        raise UsageError(f"{self.prog}: error: {message}")


def _number(cast, accept, expected: str):
    """An argparse type: text -> cast(text), refused with 'expected ..., got ...' unless accept(value)."""

    def parse(text: str):
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not accept(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text}")
        return value

    return parse


_positive_int = _number(int, lambda v: v > 0, "a positive integer")
_positive_float = _number(float, lambda v: v > 0, "a positive number")  # also refuses NaN
_nonnegative_float = _number(float, lambda v: v >= 0, "a number >= 0")


def _add_run_options(p: argparse.ArgumentParser) -> None:
    # Defaults are None so that a preset's values stand unless an option is given; RunConfig
    # holds the real defaults (shown by `digitcmp list`).
    p.add_argument(
        "--preset",
        choices=list(PRESETS),
        default=None,
        help="start from a named recipe (best: our best recipe; study_best: the study's best row)",
    )
    p.add_argument("--arch", choices=list(ARCHITECTURES), default=None, help="architecture (default siamese_cnn)")
    p.add_argument("--batch-norm", action=argparse.BooleanOptionalAction, default=None, help="(default on)")
    p.add_argument("--activation", choices=list(ACTIVATIONS), default=None, help="(default relu)")
    p.add_argument("--comparison", choices=list(COMPARISONS), default=None, help="(default learned)")
    p.add_argument("--tower", choices=list(TOWERS), default=None, help="conv trunk (default lenet)")
    p.add_argument("--optimizer", choices=list(OPTIMIZERS), default=None, help="(default sgd)")
    p.add_argument("--lr", type=_positive_float, default=None, help=f"learning rate (default {DEFAULT_LR})")
    p.add_argument("--lr-schedule", choices=["constant", "cosine"], default=None, help="(default constant)")
    p.add_argument("--epochs", type=_positive_int, default=None, help="(default 25)")
    p.add_argument("--batch-size", type=_positive_int, default=None, help="(default 100)")
    p.add_argument("--pairs", type=_positive_int, default=None, help="training pairs (default 1000, at most 30000)")
    p.add_argument("--test-pairs", type=_positive_int, default=None, help="test pairs (default 1000, at most 5000)")
    p.add_argument("--aux-weight", type=_nonnegative_float, default=None, help="(default 0)")
    p.add_argument("--augment", choices=list(AUGMENTATIONS), default=None, help="(default none)")
    p.add_argument("--recombine", action="store_true", default=None, help="re-pair the training digits every epoch")
    p.add_argument("--tta", type=_positive_int, default=None, help="views averaged at the final scoring (default 1)")
    p.add_argument("--ensemble", type=_positive_int, default=None, help="models per seed, averaged (default 1)")
    p.add_argument(
        "--validation",
        action="store_true",
        default=None,
        help="evaluate on 20%% of the training pairs held out (for tuning), not on the test pairs",
    )


def _add_device_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", choices=["cpu", "cuda", "auto"], default="cpu")
    p.add_argument(
        "--threads", type=_positive_int, default=1, help="torch intra-op threads (default 1: fastest for these small nets)"
    )
    p.add_argument(
        "--data-dir",
        default=None,
        help="folder with the four MNIST IDX files (default: $DIGITCMP_DATA_DIR, else the embedded copy)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="digitcmp", description="Compare pairs of MNIST digits: the study's nets, trained and measured.")
    parser.add_argument("--version", action="version", version=f"digitcmp {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    sub.add_parser("list", help="architectures and options")

    train = sub.add_parser("train", help="train one run and report its errors and time")
    _add_run_options(train)
    train.add_argument("--seed", type=int, default=0)
    _add_device_options(train)
    train.add_argument("--json", action="store_true", help="print one JSON object on the last line")
    train.add_argument("--save", metavar="PATH", default=None, help="write the trained model as a safetensors checkpoint")

    repro = sub.add_parser("reproduce", help="run the study's experiments (what is missing) and write the report")
    repro.add_argument(
        "--experiment",
        action="append",
        default=None,
        metavar="NAME",
        help=f"experiment to run (repeatable; default: {', '.join(STUDY_EXPERIMENTS)})",
    )
    repro.add_argument(
        "--all",
        action="store_true",
        help=f"every declared experiment: the study's and ours ({', '.join(BEYOND_EXPERIMENTS)})",
    )
    repro.add_argument(
        "--seeds", type=_positive_int, default=None, help=f"seeds per row (default {DEFAULT_SEEDS}; 5 for learning_curve)"
    )
    repro.add_argument("--epochs", type=_positive_int, default=None, help="epochs per run (default: the study's 25)")
    repro.add_argument("--db", default=None, help=f"results store (default {DEFAULT_DB}; {QUICK_DB} with --quick)")
    repro.add_argument("--out", default=None, help=f"report folder (default {DEFAULT_OUT}; {QUICK_OUT} with --quick)")
    repro.add_argument("--quick", action="store_true", help="every experiment with 2 seeds and 2 epochs (a smoke test)")
    repro.add_argument("--jobs", type=_positive_int, default=None, help="worker processes (default: the usable cores)")
    repro.add_argument("--no-progress", action="store_true", help="no progress bar")
    repro.add_argument(
        "--checkpoints",
        metavar="DIR",
        default=None,
        help="keep the weights of every run trained now as DIR/<experiment>-<hash>-seed<N>.safetensors",
    )
    repro.add_argument(
        "--engine",
        choices=list(ENGINES),
        default="auto",
        help="auto: batch the seeds of a config where it pays (GPU; FNN on CPU)",
    )
    _add_device_options(repro)

    predict = sub.add_parser("predict", help="is the first digit <= the second? for image files or .npy arrays")
    predict.add_argument("--model", required=True, metavar="PATH", help="checkpoint written by train --save")
    predict.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="image files (consecutive files form pairs) or .npy arrays [N, 2, 14, 14] / [2, 14, 14]",
    )
    predict.add_argument("--json", action="store_true", help="print a JSON array, one object per pair")

    report = sub.add_parser("report", help="rewrite the report from the results store alone")
    report.add_argument("--db", default=DEFAULT_DB)
    report.add_argument("--out", default=None, help=f"report folder (default {DEFAULT_OUT}; docs with --docs)")
    report.add_argument(
        "--docs", action="store_true", help="write the reference copy: docs/results.md and PNG figures, no CSV/LaTeX tables"
    )
    return parser


def cmd_list(args) -> None:
    print("architectures:")
    for name, arch in ARCHITECTURES.items():
        heads = "comparison + digit logits" if arch.has_digit_logits else "comparison logits"
        print(f"  {name:<12} {arch.description} [{heads}]")
    print(f"activations: {', '.join(ACTIVATIONS)}")
    print(f"optimizers:  {', '.join(OPTIMIZERS)} (default learning rates {DEFAULT_LR})")
    print(f"comparisons: {', '.join(COMPARISONS)} (digit-head models)")
    print(f"towers:      {', '.join(TOWERS)}")
    print(f"augment:     {', '.join(AUGMENTATIONS)}")
    print("experiments:")
    for name, exp in EXPERIMENTS.items():
        print(f"  {name:<12} {exp.title}: {exp.description} ({len(exp.rows)} rows)")


RUN_OPTIONS = (
    "arch",
    "batch_norm",
    "activation",
    "comparison",
    "tower",
    "optimizer",
    "lr",
    "lr_schedule",
    "epochs",
    "batch_size",
    "pairs",
    "test_pairs",
    "aux_weight",
    "augment",
    "recombine",
    "tta",
    "ensemble",
    "validation",
)


def run_config_from_args(args) -> RunConfig:
    """The RunConfig of the command line: the preset (if any), then every option given."""
    fields = dict(PRESETS[args.preset]) if args.preset else {}
    fields.update({name: getattr(args, name) for name in RUN_OPTIONS if getattr(args, name) is not None})
    return RunConfig(**fields)


def cmd_train(args) -> None:
    from .train import train_run

    config = run_config_from_args(args)
    if args.save:
        _check_writable(args.save)
    result, model, data = train_run(config, args.seed, device=args.device, data_dir=args.data_dir)
    if args.save:
        from .checkpoint import save_checkpoint

        save_checkpoint(args.save, model.state_dict(), config, data.mean, data.std, result)
    if args.json:
        print(json.dumps({**result, "config": config.to_dict(), "config_hash": config.config_hash()}))
        return
    split = "validation" if config.validation else "test"
    print(
        f"{config.arch} seed {args.seed}: {split} error {100 * result['test_error']:.2f} %, "
        f"train error {100 * result['train_error']:.2f} %, training {result['train_seconds']:.2f} s"
    )


def _check_writable(path: str) -> None:
    """Fail before training, not after, when a checkpoint cannot be written."""
    from pathlib import Path

    folder = Path(path).expanduser().resolve().parent
    if not folder.is_dir():
        raise ValueError(f"cannot save to {path}: folder {folder} does not exist")


def cmd_predict(args) -> None:
    from .predict import load_model

    predictions = load_model(args.model).predict(args.inputs)
    if args.json:
        print(json.dumps(predictions))
        return
    for p in predictions:
        answer = "yes" if p["le"] else "no"
        digits = f"; digits {p['digits'][0]}, {p['digits'][1]}" if "digits" in p else ""
        print(f"{p['input']}: {answer} (p = {p['p_le']:.2f}){digits}")


def cmd_reproduce(args) -> None:
    from .experiments import expand, get_experiment
    from .report import write_report
    from .store import Store
    from .sweep import run_missing, usable_cores

    names = list(EXPERIMENTS) if args.all else (args.experiment or list(STUDY_EXPERIMENTS))
    for name in names:
        get_experiment(name)  # unknown names fail here, listing the valid ones
    seeds = args.seeds or (2 if args.quick else None)  # None: each experiment's own default
    epochs = args.epochs or (2 if args.quick else None)
    db = args.db or (QUICK_DB if args.quick else DEFAULT_DB)
    out = args.out or (QUICK_OUT if args.quick else DEFAULT_OUT)
    planned = expand(names, seeds, epochs)
    if args.checkpoints:
        from pathlib import Path

        Path(args.checkpoints).mkdir(parents=True, exist_ok=True)
    store = Store(db)
    with store.exclusive():
        store.add_sweep(names, seeds or 0, epochs, "digitcmp " + " ".join(args.argv))
        trained = run_missing(
            store,
            planned,
            jobs=args.jobs or usable_cores(),
            device=args.device,
            data_dir=args.data_dir,
            progress=not args.no_progress,
            engine=args.engine,
            checkpoints=args.checkpoints,
        )
        path = write_report(store, out)
    print(f"{len(planned)} runs planned, {trained} trained, {len(planned) - trained} already stored in {db}")
    print(f"report: {path}")


def cmd_report(args) -> None:
    from pathlib import Path

    from .report import write_report
    from .store import Store

    if not Path(args.db).is_file():
        raise ValueError(f"results store {args.db} does not exist; run `digitcmp reproduce` first or pass --db")
    store = Store(args.db, read_only=True)  # a report never changes the store it reads
    if args.docs:
        path = write_report(store, args.out or "docs", md_name="results.md", tables=False, formats=("png",))
    else:
        path = write_report(store, args.out or DEFAULT_OUT)
    print(f"report: {path}")


COMMANDS = {
    "list": cmd_list,
    "train": cmd_train,
    "reproduce": cmd_reproduce,
    "report": cmd_report,
    "predict": cmd_predict,
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `digitcmp` console script; returns the exit status."""
    from .data import DataError

    try:
        argv = sys.argv[1:] if argv is None else list(argv)
        args = build_parser().parse_args(argv)
        args.argv = argv
        torch.set_num_threads(getattr(args, "threads", 1))
        COMMANDS[args.command](args)
    except UsageError as err:
        print(err, file=sys.stderr)
        return 2
    except (DataError, ValueError, OSError) as err:
        print(f"digitcmp: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("digitcmp: interrupted", file=sys.stderr)
        return 130
    return 0


def main_exit() -> None:
    """Console-script wrapper: exit with main()'s status."""
    sys.exit(main())
