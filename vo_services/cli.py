"""The ``retrspect`` command: a thin dispatcher on top of everything.

Each subcommand imports its code only when it runs.  The training commands
(train, export, analyse, benchmark models) run ``python -m
retrspect.models.cli`` in a process of their own, so nothing at run time
imports training code or torch, and without the ``train`` extra they say
what to install.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _serve(args) -> int:
    from retrspect.vo_services import server
    action = {"start": server.start, "stop": server.stop,
              "status": server.status}[args.action]
    print(action())
    return 0


def _deploy(args) -> int:
    """Link the RD, stage the bundled spectra, import, previews, serve."""
    from retrspect.vo_services import deploy
    deploy.deploy(Path(args.resdir))
    return 0


def _import(args) -> int:
    """Import new source files (incremental), then re-embed what the current
    model versions must (atomically)."""
    from retrspect.vo_services import deploy
    deploy.ingest_environment(workers=args.workers, dask=args.dask,
                              model_dir=args.model_dir,
                              no_models=args.no_models)
    deploy.import_new()
    return 0


def _check(args) -> int:
    """Check the database, tables, models and server; exit 1 on a failure."""
    from retrspect.vo_services import health
    return health.main(as_json=args.json)


def training_command(command: str, rest: list[str]) -> int:
    """Run ``retrspect.models.cli`` (train, export, analyse, benchmark) in a
    process of its own; refuse clearly when the training extra is missing."""
    import subprocess
    from importlib.util import find_spec
    if find_spec("torch") is None:
        print(f"retrspect {command}: needs torch; install the training extra "
              "(pip install 'retrspect[train]')", file=sys.stderr)
        return 1
    return subprocess.run([sys.executable, "-m", "retrspect.models.cli",
                           command, *rest]).returncode


BENCHMARKS = {
    "models": "ONNX Runtime against eager torch per shipped model (needs `retrspect train`)",
    "ingest": "spectra/s with and without the models, memory flat in N",
    "knn": "HNSW kNN at 1M vectors: TAP and SQL latency, recall",
    "load": "50 concurrent clients: errors, latency, server memory",
    "train_space": "training a latent space on the archive: minutes, self-retrieval",
    "serve": "32 clients on the multi-process server, one process killed: rate, p95, errors",
    "async_tap": "where an async TAP job's seconds go, against sync and a cold start",
    "replica_lag": "read-replica lag during an import of 10k spectra",
    "explorer": "latent slider to redrawn decoded spectrum, in headless Chromium",
    "active_learning": "campaigns against random labelling, with a simulated oracle",
}


def _benchmark(args) -> int:
    """Run a benchmark; its figures go to a JSON file beside its baseline."""
    if args.name == "models":
        return training_command("benchmark", args.rest)
    import subprocess
    script = Path(args.repo).resolve() / "tests" / "benchmarks" / f"bench_{args.name}.py"
    if not script.exists():
        raise RuntimeError(f"{script} not found: run from the checkout or give --repo")
    return subprocess.run([sys.executable, str(script), *args.rest],
                          cwd=script.parents[2]).returncode


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="retrspect",
        description="A retrieval engine for VO spectra (DaCHS + pgvector).")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("deploy", help=_deploy.__doc__)
    p.add_argument("--resdir", default="resdir",
                   help="the resource directory to publish (default: resdir)")
    p.set_defaults(func=_deploy)

    p = sub.add_parser("import", help=_import.__doc__)
    p.add_argument("--workers", type=int,
                   help="worker processes (default: one per core)")
    p.add_argument("--dask", metavar="SCHEDULER",
                   help="run reading, preprocessing and inference on a Dask "
                        "cluster: a scheduler address, or 'local' for a "
                        "LocalCluster")
    p.add_argument("--model-dir", help="directory of the ONNX models "
                                       "(default: the shipped models)")
    p.add_argument("--no-models", action="store_true",
                   help="ingest metadata only, no ML results")
    p.set_defaults(func=_import)

    p = sub.add_parser("serve", help="start, stop or ask the DaCHS server")
    p.add_argument("action", choices=["start", "stop", "status"])
    p.set_defaults(func=_serve)

    p = sub.add_parser("check", help=_check.__doc__)
    p.add_argument("--json", action="store_true",
                   help="results as JSON (name, ok, detail)")
    p.set_defaults(func=_check)

    p = sub.add_parser(
        "benchmark", help=_benchmark.__doc__,
        description=_benchmark.__doc__ + "  " + "; ".join(
            f"{name}: {text}" for name, text in BENCHMARKS.items()) + ".")
    p.add_argument("name", choices=list(BENCHMARKS))
    p.add_argument("--repo", default=".",
                   help="the checkout whose tests/benchmarks to run (default: .)")
    p.add_argument("rest", nargs=argparse.REMAINDER,
                   help="arguments for the benchmark (e.g. --sizes 2000)")
    p.set_defaults(func=_benchmark)

    for name, text in (("train", "train the models on the bundled spectra"),
                       ("export", "export trained models to ONNX"),
                       ("analyse", "latent-space analysis and plots"),
                       ("train-space", "train a latent space on the archive's "
                                       "own spectra (see models/CONTRACT.md)")):
        p = sub.add_parser(name, help=text, add_help=False)
        p.add_argument("rest", nargs=argparse.REMAINDER,
                       help="arguments for the models command")
    return parser


MODEL_COMMANDS = ("train", "export", "analyse", "train-space", "decoders")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in MODEL_COMMANDS:
        # everything after the subcommand belongs to the training command,
        # options first included (argparse's REMAINDER drops leading options)
        return training_command(argv[0], argv[1:])
    from retrspect.ingest.errors import RetrspectError
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (RuntimeError, RetrspectError) as err:
        print(f"retrspect {args.command}: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
