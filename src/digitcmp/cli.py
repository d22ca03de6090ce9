"""Command line: `digitcmp list | train | reproduce | report | predict | serve | tune`.

A table of commands (COMMANDS, at the end): each command's options are declared next to its
handler. Engine functions return results; this module parses arguments, prints, and turns every
expected failure (bad names, bad numbers, bad files) into one line on stderr with exit status 2.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

from . import __version__

if TYPE_CHECKING:
    from .core.config import RunConfig

# The study's modules (and torch under them) are imported by the commands and options that need
# them, not here: `digitcmp --help`, `predict` and `serve` answer without importing torch.

# What training, scoring and reporting import, and answering does not (README: comparing digits without torch).
STUDY_PACKAGES = {"torch", "scipy", "matplotlib", "safetensors", "onnx", "onnxscript"}
DEFAULT_DB, DEFAULT_OUT = "results/digitcmp.sqlite", "results"
QUICK_DB, QUICK_OUT = "results/quick.sqlite", "results/quick"


class UsageError(Exception):
    """A bad command line or input: reported as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line instead of usage + message
        raise UsageError(f"{self.prog}: error: {message}")


def _path(text: str) -> str:
    """An argparse type for a file or folder: the empty string is no path (it would silently mean
    the default, or the current folder)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a file or folder path, got an empty string")
    return text


def _token(text: str) -> str:
    """An argparse type for a bearer token: 16 to 256 visible ASCII characters, no spaces."""
    if not (16 <= len(text) <= 256 and all(33 <= ord(c) <= 126 for c in text)):
        raise argparse.ArgumentTypeError("expected a token of 16 to 256 visible ASCII characters (no spaces)")
    return text


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


def _bounded_int(low: int, high: int):
    return _number(int, lambda v: low <= v <= high, f"an integer in [{low}, {high}]")


def _field_type(f):
    """The argparse type of a numeric RunConfig field: its declared kind and range (settings.check_field)."""
    from .core.settings import check_field, describe_range, field_kind

    cast = int if field_kind(f) in (int, tuple) else float

    def accept(value) -> bool:
        try:
            check_field(f, (value, value) if field_kind(f) is tuple else value)
        except ValueError:
            return False
        return True

    return _number(cast, accept, describe_range(f))


def _field(name: str):
    from .core.config import RunConfig

    return next(f for f in fields(RunConfig) if f.name == name)


def _add_run_options(p: argparse.ArgumentParser) -> None:
    """One flag per RunConfig field: name, type, range or choices and help all from its declaration."""
    from .core.config import DEFAULT_LR, RunConfig
    from .core.settings import describe_range, field_docs, field_kind
    from .study.experiments import PRESETS

    # Defaults are None so that a preset's values stand unless an option is given; RunConfig
    # holds the real defaults, shown in each flag's help.
    p.add_argument(
        "--preset",
        choices=list(PRESETS),
        default=None,
        help="start from a named recipe (best: our best recipe; study_best: the study's best row)",
    )
    docs = field_docs(RunConfig)
    for f in fields(RunConfig):
        flag = "--" + f.name.replace("_", "-")
        kind = field_kind(f)
        if f.default is None:  # the learning rate
            default = ", ".join(f"{k} {v:g}" for k, v in DEFAULT_LR.items())
        else:
            default = " ".join(map(str, f.default)) if kind is tuple else f.default
        allowed = f"; {describe_range(f)}" if f.metadata.get("low") is not None else ""
        text = f"{docs[f.name]} (default: {default}{allowed})".replace("%", "%%")
        if kind is bool:
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=text)
        elif f.metadata.get("choices") is not None:
            p.add_argument(flag, choices=list(f.metadata["choices"]), default=None, help=text)
        elif kind is tuple:
            p.add_argument(flag, type=_field_type(f), nargs=2, metavar=("C1", "C2"), default=None, help=text)
        else:
            p.add_argument(flag, type=_field_type(f), default=None, metavar=kind.__name__.upper(), help=text)


def _add_device_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--device",
        choices=["cpu", "cuda", "auto"],
        default="cpu",
        help="where runs train: cpu (default), cuda (an NVIDIA GPU; refused when none is there), auto (cuda if present)",
    )
    p.add_argument(
        "--threads",
        type=_bounded_int(1, 256),
        default=1,
        help="torch intra-op threads (default 1: fastest for these small nets)",
    )
    p.add_argument(
        "--data-dir",
        type=_path,
        default=None,
        help="folder with the four MNIST IDX files (default: $DIGITCMP_DATA_DIR, else the embedded copy)",
    )


def _add_sweep_options(p: argparse.ArgumentParser, what: str, jobs: int | None) -> None:
    """The options of a command that runs many trainings (reproduce: runs; tune: trials)."""
    from .run.executors import BACKENDS

    default_jobs = "the usable cores" if jobs is None else str(jobs)
    p.add_argument("--jobs", type=_bounded_int(1, 256), default=jobs, help=f"{what} run at once (default: {default_jobs})")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--backend",
        choices=list(BACKENDS),
        default="local",
        help=f"where {what} train: local worker processes, or Ray tasks (pip install -e .[ray]; docs/cluster.md"
        + ("; the storage must be reachable from every node)" if what == "trials" else ")"),
    )
    p.add_argument(
        "--address",
        default=None,
        help="with --backend ray: a running cluster ('auto', host:port or ray://host:port); default: start a local "
        "Ray instance with --jobs CPUs",
    )


@dataclass(frozen=True)
class Command:
    """A command of the table: its name and help, its options, its handler."""

    name: str
    help: str
    add_options: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], None]


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The whole command line; given the arguments, only the named command's options are declared
    (the others' need the study's modules and torch, which `--help` or `predict` should not wait for)."""
    parser = _Parser(prog="digitcmp", description="Compare pairs of MNIST digits: the study's nets, trained and measured.")
    parser.add_argument("--version", action="version", version=f"digitcmp {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    named = None if argv is None else next((a for a in argv if not a.startswith("-")), "")
    for command in COMMANDS.values():
        command_parser = sub.add_parser(command.name, help=command.help)
        if named is None or named == command.name:
            command.add_options(command_parser)
    return parser


def _list_options(p: argparse.ArgumentParser) -> None:
    pass  # no options


def cmd_list(args: argparse.Namespace) -> None:
    """`digitcmp list`: the registries' names, the experiments and the presets."""
    from .core.catalog import ACTIVATIONS, ARCHITECTURES, AUGMENTERS, COMPARISONS, TOWERS
    from .core.config import DEFAULT_LR, OPTIMIZERS
    from .study.experiments import EXPERIMENTS

    print("architectures:")
    for name, arch in ARCHITECTURES.items():
        heads = "comparison + digit logits" if arch.has_digit_logits else "comparison logits"
        print(f"  {name:<12} {arch.description} [{heads}]")
    print(f"activations: {', '.join(ACTIVATIONS)}")
    print(f"optimizers:  {', '.join(OPTIMIZERS)} (default learning rates {DEFAULT_LR})")
    print(f"comparisons: {', '.join(COMPARISONS)} (digit-head models)")
    print(f"towers:      {', '.join(TOWERS)}")
    print(f"augment:     {', '.join(AUGMENTERS)}")
    print("experiments:")
    for name, exp in EXPERIMENTS.items():
        rows = len(exp.rows)
        print(f"  {name:<12} {exp.title}: {exp.description} ({rows} row{'s' if rows != 1 else ''})")
    from .tune.spaces import SPACES

    print("search spaces (digitcmp tune SPACE):")
    for name, space in SPACES.items():
        searched = ", ".join(dict.fromkeys(n for key in space.studies for n in space.ranges(key)))
        studies = f"; {len(space.studies)} studies" if len(space.studies) > 1 else ""
        print(f"  {name:<12} {space.description} [{space.sampler}: {searched}{studies}]")


def run_config_from_args(args: argparse.Namespace) -> RunConfig:
    """The RunConfig of the command line: the preset (if any), then every option given."""
    from .core.config import RunConfig
    from .study.experiments import PRESETS

    values = dict(PRESETS[args.preset]) if args.preset else {}
    values.update({f.name: getattr(args, f.name) for f in fields(RunConfig) if getattr(args, f.name) is not None})
    return RunConfig(**values)


def _train_options(p: argparse.ArgumentParser) -> None:
    from .core.config import MAX_SEED

    _add_run_options(p)
    p.add_argument("--seed", type=_bounded_int(0, MAX_SEED), default=0, help="the run's seed (default 0)")
    _add_device_options(p)
    p.add_argument("--json", action="store_true", help="print one JSON object on the last line")
    p.add_argument(
        "--save", type=_path, metavar="PATH", default=None, help="write the trained model as a safetensors checkpoint"
    )


def cmd_train(args: argparse.Namespace) -> None:
    """`digitcmp train`: one run, printed (and saved with --save)."""
    import contextlib
    from pathlib import Path

    from .core.train import train_run

    config = run_config_from_args(args)
    with contextlib.ExitStack() as made:  # the checkpoint's folders: made before training, removed if it fails
        if args.save is not None:
            from .common.destinations import check_kind, file_target, folders_made

            check_kind(args.save, "checkpoint")
            made.enter_context(folders_made(Path(os.path.realpath(args.save)).parent, f"checkpoint {args.save}"))
            file_target(args.save, "checkpoint")  # before training, not after
        result, model, data = train_run(config, args.seed, device=args.device, data_dir=args.data_dir)
    if args.json:
        print(_json({**result.to_dict(), "config": config.to_dict(), "config_hash": config.config_hash()}))
    else:
        print(
            f"{config.arch} seed {args.seed}: {result.split} error {100 * result.held_out_error:.2f} %, "
            f"train error {100 * result.train_error:.2f} %, training {result.train_seconds:.2f} s"
        )
    if args.save is not None:  # after the result is printed: a failed write does not lose what was measured
        from .core.checkpoint import save_checkpoint

        save_checkpoint(args.save, model.state_dict(), config, data.mean, data.std, result)


def _json(value) -> str:
    """Strict JSON (no NaN or Infinity, which JSON does not have): a float that is not finite
    (the loss of a diverged training) is written as null."""

    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    return json.dumps(clean(value), allow_nan=False)


def _add_model_option(p: argparse.ArgumentParser) -> None:
    """--model, as every command that answers with a model takes it."""
    p.add_argument(
        "--model",
        default=None,
        metavar="PATH",
        help="checkpoint written by train --save (default: the model shipped in the package, docs/model_card.md)",
    )


def _predict_options(p: argparse.ArgumentParser) -> None:
    _add_model_option(p)
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="image files (consecutive files form pairs) or .npy arrays [N, 2, 14, 14] / [2, 14, 14]",
    )
    p.add_argument("--json", action="store_true", help="print a JSON array, one object per pair")


def _export_options(p: argparse.ArgumentParser) -> None:
    _add_model_option(p)
    p.add_argument(
        "--out",
        type=_path,
        required=True,
        metavar="DIR",
        help="folder for <model>.onnx and digitness.onnx (created if missing; the shipped ones: src/digitcmp/app/shipped)",
    )


def cmd_export(args: argparse.Namespace) -> None:
    """`digitcmp export`: a checkpoint's ONNX graph (and the detector's)."""
    from pathlib import Path

    from .app.digitness import shipped_detector_path
    from .app.export import export_detector, export_model
    from .app.predict import shipped_model_path
    from .common.destinations import folders_made

    model = args.model or shipped_model_path()
    if not Path(model).is_file():
        raise UsageError(f"digitcmp export: error: --model {model} does not exist or is not a file")
    out = Path(args.out)
    with folders_made(out, "--out"):  # a failed export leaves no folder of its own
        written = [
            export_model(model, out / f"{Path(model).stem}.onnx"),
            export_detector(shipped_detector_path(), out / "digitness.onnx"),
        ]
    for path in written:
        print(f"wrote {path}")


def cmd_predict(args: argparse.Namespace) -> None:
    """`digitcmp predict`: compare the digits of the inputs."""
    from .app.predict import load_model

    predictions = load_model(args.model).predict(args.inputs, progress=True)
    if args.json:
        print(_json([p.to_dict() for p in predictions]))
        return
    for p in predictions:
        print(p.plain())


def _sweep_command(args) -> str:
    """The reproduce command as a user would type it to get the same runs: the options that
    choose them, none of the paths or settings that only say where and how fast."""
    import shlex

    parts = ["digitcmp", "reproduce"]
    parts += ["--quick"] if args.quick else []
    if args.all:
        parts.append("--all")
    for name in args.experiment or []:
        parts += ["--experiment", name]
    for flag, value, default in (
        ("--seeds", args.seeds, None),
        ("--epochs", args.epochs, None),
        ("--device", args.device, "cpu"),
        ("--engine", args.engine, "auto"),
    ):
        if value != default:
            parts += [flag, str(value)]
    return " ".join(shlex.quote(p) for p in parts)


def _check_backend_options(args) -> None:
    if args.address is not None and args.backend != "ray":
        raise UsageError(f"digitcmp {args.command}: error: --address needs --backend ray (it names a Ray cluster)")


def _execution(args, jobs: int):
    """Where a command's runs train, from its flags (one object for sweeps and tuning alike)."""
    from .run.executors import Execution

    share = getattr(args, "gpus_per_task", Execution.gpus_per_task)
    return Execution(args.device, args.data_dir, args.backend, args.address, jobs, share)


def _cluster(args, jobs: int | None):
    """With --backend ray: the cluster reached and checked (or a Ray instance of `jobs` CPUs started
    here) for the block, before the command writes anything; otherwise nothing."""
    import contextlib

    if args.backend != "ray":
        return contextlib.nullcontext()
    from .run.ray_connect import connected

    return connected(args.address, args.device, jobs)


def _reproduce_options(p: argparse.ArgumentParser) -> None:
    from .run.tasks import ENGINES
    from .study.experiments import BEYOND_EXPERIMENTS, DEFAULT_SEEDS, STUDY_EXPERIMENTS

    p.add_argument(
        "--experiment",
        action="append",
        default=None,
        metavar="NAME",
        help=f"experiment to run (repeatable; default: {', '.join(STUDY_EXPERIMENTS)})",
    )
    p.add_argument(
        "--all",
        action="store_true",
        help=f"every declared experiment: the study's and ours ({', '.join(BEYOND_EXPERIMENTS)})",
    )
    p.add_argument(
        "--seeds",
        type=_bounded_int(1, 1000),
        default=None,
        help=f"seeds per row (default {DEFAULT_SEEDS}; 5 for learning_curve)",
    )
    p.add_argument(
        "--epochs", type=_field_type(_field("epochs")), default=None, help="epochs per run (default: the study's 25)"
    )
    p.add_argument("--db", type=_path, default=None, help=f"results store (default {DEFAULT_DB}; {QUICK_DB} with --quick)")
    p.add_argument(
        "--out", type=_path, default=None, help=f"report folder (default {DEFAULT_OUT}; {QUICK_OUT} with --quick)"
    )
    p.add_argument("--quick", action="store_true", help="every experiment with 2 seeds and 2 epochs (a smoke test)")
    p.add_argument(
        "--checkpoints",
        type=_path,
        metavar="DIR",
        default=None,
        help="keep the weights of every run trained now as DIR/<experiment>-<hash>-seed<N>.safetensors",
    )
    p.add_argument(
        "--engine",
        choices=list(ENGINES),
        default="auto",
        help="auto: batch the seeds of a config where it pays (GPU; FNN on CPU)",
    )
    p.add_argument(
        "--gpus-per-task",
        type=_number(float, lambda v: 0 < v <= 1, "a number in (0, 1]"),
        default=0.25,
        help="with --backend ray --device cuda: the share of a GPU each run takes (default 0.25: four runs per GPU)",
    )
    _add_sweep_options(p, "runs", jobs=None)
    _add_device_options(p)


def cmd_reproduce(args: argparse.Namespace) -> None:
    """`digitcmp reproduce`: train the experiments' missing runs into the store, then write the report."""
    from .common.destinations import check_folder, check_kind
    from .common.host import usable_cores
    from .run.sweep import run_missing
    from .study.experiments import EXPERIMENTS, STUDY_EXPERIMENTS, get_experiment
    from .study.plan import expand
    from .study.report import write_report
    from .study.store import Store

    _check_backend_options(args)
    names = list(EXPERIMENTS) if args.all else (args.experiment or list(STUDY_EXPERIMENTS))
    for name in names:
        get_experiment(name)  # unknown names fail here, listing the valid ones
    seeds = args.seeds or (2 if args.quick else None)  # None: each experiment's own default
    epochs = args.epochs or (2 if args.quick else None)
    db = args.db if args.db is not None else (QUICK_DB if args.quick else DEFAULT_DB)
    out = args.out if args.out is not None else (QUICK_OUT if args.quick else DEFAULT_OUT)
    planned = expand(names, seeds, epochs)
    # Every destination checked before anything is created; then the store (which removes what it
    # created if it cannot be made), then the folders, all before any training.
    check_kind(db, "results store")
    folders = {out: "report folder", **({args.checkpoints: "checkpoints folder"} if args.checkpoints is not None else {})}
    for folder, what in folders.items():
        check_folder(folder, what, create=False)
    jobs = args.jobs or usable_cores()
    with _cluster(args, jobs):  # a cluster that cannot be reached: one line, and nothing written
        store = Store(db)
        for folder, what in folders.items():
            check_folder(folder, what)
        with store.exclusive():
            store.add_sweep(names, seeds or 0, epochs, _sweep_command(args))
            trained = run_missing(
                store,
                planned,
                _execution(args, jobs),
                progress=not args.no_progress,
                engine=args.engine,
                checkpoints=args.checkpoints,
            )
            path = write_report(store, out)
    print(f"{len(planned)} runs planned, {trained} trained, {len(planned) - trained} already stored in {db}")
    print(f"report: {path}")


def _report_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", type=_path, default=DEFAULT_DB)
    p.add_argument("--out", type=_path, default=None, help=f"report folder (default {DEFAULT_OUT}; docs with --docs)")
    p.add_argument(
        "--docs",
        action="store_true",
        help="write the reference copy: docs/results.md, PNG figures and their CSV data, no CSV/LaTeX tables",
    )


def cmd_report(args: argparse.Namespace) -> None:
    """`digitcmp report`: the report of a store."""
    from pathlib import Path

    from .study.report import write_report
    from .study.store import Store

    if not Path(args.db).is_file():
        raise ValueError(f"results store {args.db} does not exist; run `digitcmp reproduce` first or pass --db")
    store = Store(args.db, read_only=True)  # a report never changes the store it reads
    if args.docs:
        path = write_report(
            store,
            args.out or "docs",
            md_name="results.md",
            tables=False,
            formats=("png",),
            report_command="digitcmp report --docs",
        )
    else:
        path = write_report(store, args.out or DEFAULT_OUT, report_command="digitcmp report")
    print(f"report: {path}")


def _tune_options(p: argparse.ArgumentParser) -> None:
    from .core.config import MAX_SEED

    p.add_argument("space", nargs="?", default=None, help="search space (digitcmp list shows them)")
    p.add_argument(
        "--trials",
        type=_bounded_int(1, 100000),
        default=None,
        help="trials of each study in total, a grid's too (its points in order); a rerun resumes up to it "
        "(default: the space's; a grid: all its points)",
    )
    p.add_argument(
        "--seeds", type=_bounded_int(1, 100), default=None, help="validation seeds per trial (default: the space's)"
    )
    p.add_argument(
        "--storage",
        type=_path,
        default=None,
        metavar="PATH",
        help=f"Optuna storage: a SQLite file or an RDB URL (default {DEFAULT_DB.rsplit('/', 1)[0]}/tuning.sqlite)",
    )
    p.add_argument("--seed", type=_bounded_int(0, MAX_SEED), default=0, help="the sampler's seed (default 0)")
    p.add_argument(
        "--report",
        action="store_true",
        help="write the report of the stored studies (of SPACE, or of every space) instead of running trials",
    )
    p.add_argument("--out", type=_path, default=None, help=f"report folder (default {DEFAULT_OUT}; docs with --docs)")
    p.add_argument("--docs", action="store_true", help="with --report: write docs/tuning.md and its figures")
    _add_sweep_options(p, "trials", jobs=1)
    _add_device_options(p)


def cmd_tune(args: argparse.Namespace) -> None:
    """`digitcmp tune`: run a search space's studies, or report on them."""
    import time

    from .tune.search import TuneError, default_storage, import_optuna, storage_url, tune
    from .tune.spaces import get_space

    storage = args.storage or default_storage(DEFAULT_DB)
    if args.report:
        from .tune.report import write_tuning_report

        spaces = [get_space(args.space).name] if args.space else None
        if "://" not in storage and not os.path.isfile(storage):
            raise ValueError(f"tuning storage {storage} does not exist; run `digitcmp tune SPACE` first or pass --storage")
        out = args.out or ("docs" if args.docs else DEFAULT_OUT)
        path = write_tuning_report(storage_url(storage), out, spaces, docs=args.docs)
        print(f"report: {path}")
        return
    if args.space is None:
        raise UsageError("digitcmp tune: error: give a search space (digitcmp list shows them), or --report")
    _check_backend_options(args)
    space = get_space(args.space)
    storage_url(storage)  # a storage that cannot be used: one line, before anything else
    import_optuna()  # the extra missing: one line, before a cluster is reached
    started = time.perf_counter()
    try:
        with _cluster(args, args.jobs):  # reached before the storage is written
            best = tune(
                space.name,
                storage,
                trials=args.trials,
                seeds=args.seeds,
                execution=_execution(args, args.jobs),
                seed=args.seed,
                progress=not args.no_progress,
            )
    except ImportError as err:  # an optional extra missing inside a worker
        raise TuneError(str(err)) from None
    for name, b in best.items():
        params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in b["params"].items())
        print(
            f"{name}: chose trial {b['trial']} ({params}): validation error {100 * b['value']:.2f} % in the search, "
            f"{100 * b['rescored']:.2f} % re-scored on fresh seeds; {b['trials']} trials stored"
        )
    print(f"storage: {storage} ({time.perf_counter() - started:.0f} s); report: digitcmp tune {space.name} --report")


def _serve_options(p: argparse.ArgumentParser) -> None:
    _add_model_option(p)
    p.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0: all)"
    )
    p.add_argument("--port", type=_bounded_int(0, 65535), default=8000, help="port (default 8000; 0: any free port)")
    p.add_argument(
        "--workers",
        type=_bounded_int(1, 64),
        default=1,
        help="server processes answering on the port, each with its own model session (default 1; on 2 cores, 2 "
        "answer about 1.5x the requests: docs/performance.md)",
    )
    p.add_argument(
        "--db", type=_path, default=None, metavar="PATH", help="also serve this results store's report at /report/"
    )
    p.add_argument(
        "--token",
        type=_token,
        default=None,
        help="require this bearer token for the API and the report (default: $DIGITCMP_TOKEN if set; the page "
        "gets it from the address printed)",
    )
    p.add_argument(
        "--allow-origin",
        action="append",
        default=[],
        type=_origin,
        metavar="ORIGIN",
        help="let pages of this origin (e.g. http://localhost:3000) post to the API, with CORS headers (repeatable; "
        "default: only the server's own page)",
    )
    p.add_argument(
        "--allow-host",
        action="append",
        default=[],
        type=_host_name,
        metavar="NAME",
        help="also answer requests addressed to this host name (repeatable; default: the address listened on, "
        "and localhost on loopback)",
    )


def _origin(text: str) -> str:
    """An origin as browsers send it: scheme://host[:port], nothing after."""
    from urllib.parse import urlsplit

    parts = urlsplit(text.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/") or parts.query:
        raise argparse.ArgumentTypeError(f"{text!r} is not an origin; give scheme://host[:port], e.g. http://localhost:3000")
    return f"{parts.scheme}://{parts.netloc}".lower()


def _host_name(text: str) -> str:
    """A host name or address, as the Host header carries it (no port)."""
    import re

    name = text.strip().lower()
    if not re.fullmatch(r"[a-z0-9.-]+|\[[0-9a-f:.]+\]", name):
        raise argparse.ArgumentTypeError(f"{text!r} is not a host name; give a name or address without a port")
    return name


def cmd_serve(args: argparse.Namespace) -> None:
    """`digitcmp serve`: the page and the API."""
    import ipaddress
    import socket
    from pathlib import Path

    from .app.predict import load_model, shipped_model_path

    try:
        import uvicorn

        from .app.http_guard import server_config
        from .app.origin import served_hosts
        from .app.served import TOKEN_ENV
        from .app.workers import AppSettings, build_app, serve_in_processes
    except ImportError as err:
        missing = getattr(err, "name", None) or str(err)
        raise ValueError(f"digitcmp serve needs the serve extra ({missing} is missing): pip install -e '.[serve]'") from None
    if args.db is not None:
        from .study.store import Store

        if not Path(args.db).is_file():
            raise ValueError(f"results store {args.db} does not exist; run `digitcmp reproduce` first or leave out --db")
        Store(args.db, read_only=True).close()  # a damaged or foreign store is refused now, not on the first visit
    token = args.token
    if token is None and os.environ.get(TOKEN_ENV):
        try:
            token = _token(os.environ[TOKEN_ENV])
        except argparse.ArgumentTypeError as err:
            raise ValueError(f"${TOKEN_ENV}: {err}") from None
    predictor = load_model(args.model)
    try:
        family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
        # IPPROTO_TCP named: asyncio sets TCP_NODELAY only on sockets that say so (else +40 ms per kept-alive request)
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((args.host, args.port))
        sock.listen(2048)  # connections queue from now on, while the server (or its workers) start
    except (OSError, UnicodeError) as err:
        raise ValueError(f"cannot listen on {args.host}:{args.port}: {getattr(err, 'strerror', None) or err}") from None
    host, port = sock.getsockname()[:2]
    name = Path(args.model).name if args.model else Path(shipped_model_path()).name
    hosts = served_hosts(host, args.allow_host)
    from .common.host import usable_cores

    threads = max(1, usable_cores() // args.workers)
    settings = AppSettings(args.model, name, args.db, token, hosts, args.allow_origin, threads)
    shown = f"[{host}]" if ":" in host else host
    if not ipaddress.ip_address(host).is_loopback:
        print(
            f"digitcmp: warning: listening on {host}, reachable from the network"
            + ("" if token else " by anyone who can reach this machine (--token requires a token)"),
            file=sys.stderr,
            flush=True,
        )
    fragment = f"#token={token}" if token else ""
    processes = f", {args.workers} processes" if args.workers > 1 else ""
    print(f"serving http://{shown}:{port}/{fragment} (model {name}{processes}); Ctrl-C stops", flush=True)
    if args.workers == 1:
        uvicorn.Server(server_config(build_app(settings, predictor))).run(sockets=[sock])
        return
    del predictor  # (it was loaded to refuse a bad model before listening; each worker loads its own)
    code = serve_in_processes(sock, settings, args.workers)
    if code > 0:
        raise ValueError(f"a server process ended with exit status {code}, so the server stopped (its error is above)")


COMMANDS = {
    command.name: command
    for command in (
        Command("list", "architectures and options", _list_options, cmd_list),
        Command("train", "train one run and report its errors and time", _train_options, cmd_train),
        Command(
            "reproduce",
            "run the study's experiments (what is missing) and write the report",
            _reproduce_options,
            cmd_reproduce,
        ),
        Command("report", "rewrite the report from the results store alone", _report_options, cmd_report),
        Command(
            "predict", "is the first digit <= the second? for image files or .npy arrays", _predict_options, cmd_predict
        ),
        Command(
            "export",
            "write a model and the digit-ness detector as ONNX files, for a runtime to answer with",
            _export_options,
            cmd_export,
        ),
        Command(
            "serve",
            "a local page to draw or drop two digits and see the comparison, with a JSON API (.[serve] extra)",
            _serve_options,
            cmd_serve,
        ),
        Command(
            "tune",
            "search a space of settings with Optuna on validation pairs (stored, resumable; .[tune] extra)",
            _tune_options,
            cmd_tune,
        ),
    )
}


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text or type(err).__name__


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `digitcmp` console script; returns the exit status."""
    import sqlite3

    from .common import interrupts
    from .run.errors import SweepError

    saved_handlers = interrupts.install()  # SIGTERM and Ctrl-C: recorded, so that neither is lost
    for stream in (sys.stdout, sys.stderr):  # a file name that is not UTF-8 (or not the terminal's) still prints
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    try:
        argv = sys.argv[1:] if argv is None else list(argv)
        args = build_parser(argv).parse_args(argv)
        if hasattr(args, "threads"):  # a command that trains: torch's threads too
            from .core.perf import configure_process

            configure_process(args.threads)
        else:
            from .common.host import tune_allocator

            tune_allocator()
        COMMANDS[args.command].run(args)
        interrupts.check()  # a stop that was swallowed on the way still ends as one
    except UsageError as err:
        print(err, file=sys.stderr)
        return 2
    except ModuleNotFoundError as err:  # an install for answering only (README): the study's packages are absent
        if (err.name or "").split(".")[0] not in STUDY_PACKAGES:
            raise
        command = next((a for a in argv if not a.startswith("-")), "")
        print(
            f"digitcmp: error: `digitcmp {command}` needs {err.name.split('.')[0]}, which this install lacks "
            "(an install for comparing digits only answers predict and serve); install digitcmp with its "
            "dependencies: pip install -e .",
            file=sys.stderr,
        )
        return 2
    except (ValueError, OSError, sqlite3.Error) as err:  # bad input, bad files, a full disk, a damaged store
        message = _one_line(err)
        if isinstance(err, sqlite3.Error):
            message = f"results store: {message} (runs stored before are kept; fix this, then the same command resumes)"
        print(f"digitcmp: error: {message}", file=sys.stderr)
        return 2
    except SweepError as err:
        print(f"digitcmp: error: {err}", file=sys.stderr)
        return 1
    except MemoryError:
        print("digitcmp: error: out of memory (give fewer pairs at once, or a smaller config)", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:  # Ctrl-C, or SIGTERM (Terminated, or a library's KeyboardInterrupt for it)
        if isinstance(err, interrupts.Terminated) or interrupts.terminated():
            print("digitcmp: terminated", file=sys.stderr)
            return 143
        print("digitcmp: interrupted", file=sys.stderr)
        return 130
    finally:
        interrupts.restore(saved_handlers)
    return 0


def main_exit() -> None:
    """Console-script wrapper: exit with main()'s status."""
    sys.exit(main())
