"""The ``retrspect`` command: a thin dispatcher.

Each subcommand imports its package only when it runs, so ``retrspect
serve`` never loads torch and ``retrspect train`` never loads DaCHS.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _deploy(args) -> int:
    """Link the RD, stage the bundled spectra, import, previews, serve."""
    from ingest.previews import make_previews
    from ingest.stage import stage_bundled
    from vo_services import server

    resdir = Path(args.resdir).resolve()
    server.link_resdir(resdir)
    examples_changed = server.install_tap_examples(
        resdir / "etc" / "tapexamples.xml")
    made = stage_bundled(resdir / "data")
    print(f"[deploy] staged {made} new source files")
    _import(args)
    made, failed = make_previews(resdir / "data", resdir / "previews")
    print(f"[deploy] previews: {made} made, {failed} files unreadable")
    if examples_changed:
        server.stop()
    print(f"[deploy] {server.start()}")
    return 0


def _ingest_environment(args) -> None:
    """Hand the ingest options to the DaCHS import (it takes no arguments)."""
    import os
    settings = {"RETRSPECT_WORKERS": getattr(args, "workers", None),
                "RETRSPECT_DASK": getattr(args, "dask", None),
                "RETRSPECT_MODEL_DIR": getattr(args, "model_dir", None),
                "RETRSPECT_NO_MODELS": "1" if getattr(args, "no_models", False)
                else None}
    for key, value in settings.items():
        if value is not None:
            os.environ[key] = str(value)


def _import(args) -> int:
    """Import new source files (incremental), then re-embed what the current
    model versions must (atomically)."""
    from vo_services import server
    _ingest_environment(args)
    server.dachs("imp", "-c", server.RD_ID)
    server.dachs("imp", server.RD_ID, "reembed")
    # the import re-makes the view when it adds rows; make it if it is missing
    if not server.table_exists("retrspect.spectra"):
        server.dachs("imp", server.RD_ID, "make_view")
    server.dachs("pub", server.RD_ID)
    server.reload()
    return 0


def _serve(args) -> int:
    from vo_services import server
    action = {"start": server.start, "stop": server.stop,
              "status": server.status}[args.action]
    print(action())
    return 0


def _check(args) -> int:
    """Check the database, tables, models and server; exit 1 on a failure."""
    from vo_services import health
    return health.main(as_json=args.json)


def _models(args) -> int:
    """Train, export or analyse the models (torch is imported only here)."""
    from models import cli as models_cli
    return getattr(models_cli, args.command)(args.rest)


BENCHMARKS = {
    "models": "ONNX Runtime against eager torch per shipped model (needs `retrspect train`)",
    "ingest": "spectra/s with and without the models, memory flat in N",
    "knn": "HNSW kNN at 1M vectors: TAP and SQL latency, recall",
    "load": "50 concurrent clients: errors, latency, server memory",
}


def _benchmark(args) -> int:
    """Run a benchmark; its figures go to a JSON file beside its baseline."""
    if args.name == "models":
        from models import cli as models_cli
        return models_cli.benchmark(args.rest)
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
                       ("analyse", "latent-space analysis and plots")):
        p = sub.add_parser(name, help=text, add_help=False)
        p.add_argument("rest", nargs=argparse.REMAINDER,
                       help="arguments for the models command")
        p.set_defaults(func=_models)
    return parser


MODEL_COMMANDS = ("train", "export", "analyse")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in MODEL_COMMANDS:
        # everything after the subcommand belongs to models.cli, options
        # first included (argparse's REMAINDER drops leading options)
        from models import cli as models_cli
        return getattr(models_cli, argv[0])(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except RuntimeError as err:
        print(f"retrspect {args.command}: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
