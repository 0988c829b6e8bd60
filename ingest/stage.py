"""Stage source files into the resource directory's ``data/`` tree.

DaCHS imports what lies under ``resdir/data/<collection>/``.  The bundled
real spectra ship inside PyPI packages (sdss-mangadap, linetools); staging
links each of them there, one folder per collection, so that an archive's
own files and the bundled ones are imported the same way.
"""
from __future__ import annotations

import re
from pathlib import Path

from retrspect.ingest.bundled import bundled_sources


def collection_dir(collection: str) -> str:
    """Folder name for a collection: lower case, [a-z0-9_-] only."""
    return re.sub(r"[^a-z0-9_-]+", "_", collection.lower()).strip("_")


def stage_bundled(data_dir: Path) -> int:
    """Link every bundled source file into ``data_dir`` (idempotent).

    Returns the number of links made in this call.
    """
    made = 0
    for source in bundled_sources():
        target = Path(source.path).resolve()
        link = data_dir / collection_dir(source.collection) / target.name
        if link.is_symlink() and link.resolve() == target:
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink():
            link.unlink()
        link.symlink_to(target)
        made += 1
    return made
