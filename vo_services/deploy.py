"""Operations: publish the resource directory, import, and serve.

``retrspect deploy`` and ``retrspect import`` run these; ``make run`` calls
the first.  Both are idempotent: a second run imports only new files and
restarts the server only if its code or models changed.
"""
from __future__ import annotations

import os
from pathlib import Path

from retrspect.ingest.previews import make_previews
from retrspect.ingest.stage import stage_bundled
from retrspect.vo_services import server
from retrspect.vo_services.grammars import table_exists
from retrspect.vo_services.similarity import RD_ID


def deploy(resdir: Path) -> None:
    """Link the RD, stage the bundled spectra, import, previews, serve."""
    resdir = Path(resdir).resolve()
    server.link_resdir(resdir)
    examples_changed = server.install_tap_examples(
        resdir / "etc" / "tapexamples.xml")
    made = stage_bundled(resdir / "data")
    print(f"[deploy] staged {made} new source files")
    import_new()
    made, failed = make_previews(resdir / "data", resdir / "previews")
    print(f"[deploy] previews: {made} made, {failed} files unreadable")
    if examples_changed:
        server.stop()
    print(f"[deploy] {server.start()}")


def ingest_environment(*, workers=None, dask=None, model_dir=None,
                       no_models=False) -> None:
    """Hand the ingest options to the DaCHS import (it takes no arguments)."""
    settings = {"RETRSPECT_WORKERS": workers, "RETRSPECT_DASK": dask,
                "RETRSPECT_MODEL_DIR": model_dir,
                "RETRSPECT_NO_MODELS": "1" if no_models else None}
    for key, value in settings.items():
        if value is not None:
            os.environ[key] = str(value)


def import_new() -> None:
    """Import new source files (incremental), then re-embed what the current
    model versions must (atomically)."""
    server.dachs("imp", "-c", RD_ID)
    server.dachs("imp", RD_ID, "reembed")
    server.dachs("imp", RD_ID, "make_spaces")  # the counts follow the data
    # the import re-makes the view when it adds rows; make it if it is missing
    if not table_exists("retrspect.spectra"):
        server.dachs("imp", RD_ID, "make_view")
    server.dachs("pub", RD_ID)
    server.reload()
