"""Operations: publish the resource directory, import, and serve.

``retrspect deploy`` and ``retrspect import`` run these; ``make run`` calls
the first.  Both are idempotent: a second run imports only new files and
restarts the server only if its code or models changed.
"""
from __future__ import annotations

import os
from pathlib import Path

from retrspect.ingest.contract import DECODER_DIR, stem_of
from retrspect.ingest.previews import make_previews
from retrspect.ingest.stage import stage_bundled
from retrspect.vo_services import server
from retrspect.vo_services.campaigns import TABLES as CAMPAIGN_TABLES
from retrspect.vo_services.explorer import install_assets
from retrspect.vo_services.grammars import table_exists
from retrspect.vo_services.similarity import RD_ID


def deploy(resdir: Path) -> None:
    """Link the RD, stage the bundled spectra, import, previews, serve."""
    resdir = Path(resdir).resolve()
    server.link_resdir(resdir)
    if "RETRSPECT_MODEL_DIR" not in os.environ:
        for line in install_shipped_models():
            print(f"[deploy] models: {line}")
    link_cards(resdir)
    for served in install_assets(resdir):
        print(f"[deploy] explorer: installed {served}")
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


def check_models() -> list[str]:
    """Refuse, before anything is written, a models directory with a file
    that breaks the contract (the error names the file and the field) or a
    VAE that does not fit the generic space's table; returns the plug-in
    spaces' names."""
    from gavo import api
    from retrspect.ingest.pipeline import IngestOptions
    from retrspect.vo_services.similarity import table_models
    if not IngestOptions.from_environment().use_models:
        return []
    return sorted(table_models(api.getRD(RD_ID)).spaces)


def sync_space_tables() -> None:
    """Drop the tables of spaces whose model was removed, or replaced by one
    with other columns (they are re-made and re-embedded next)."""
    from gavo import api
    from retrspect.vo_services.spaces import outdated_tables
    outdated = outdated_tables(api.getRD(RD_ID))
    if outdated:
        print(f"[import] dropping {', '.join(outdated)}: their space's model "
              "was removed or changed shape")
        server.dachs("purge", *outdated)


#: the file (in the archive's models directory) naming the files deploy
#: copied there from the shipped models
SHIPPED_MANIFEST = ".shipped"


def install_shipped_models(shipped: Path | None = None, archive: Path | None = None
                           ) -> list[str]:
    """Copy the shipped models and their cards into the archive's models
    directory, keeping the spaces the archive trained itself.

    A shipped file replaces the previous shipped version of its name (the
    manifest says which files deploy put there) and is removed when it is
    no longer shipped; a file of the same name the archive trained
    (``retrspect train-space``, not in the manifest) is kept and the
    shipped one skipped.  Idempotent.  Returns what changed, one line each.
    """
    import shutil
    from retrspect.ingest.infer import ARCHIVE_MODEL_DIR, SHIPPED_MODEL_DIR
    shipped = Path(shipped or SHIPPED_MODEL_DIR)
    archive = Path(archive or ARCHIVE_MODEL_DIR)
    (archive / "cards").mkdir(parents=True, exist_ok=True)
    manifest = archive / SHIPPED_MANIFEST
    ours = set(manifest.read_text().split()) if manifest.exists() else set()
    present = {p.name for p in archive.glob("*.onnx")}
    wanted = {p.name for p in shipped.glob("*.onnx")}
    changes, installed = [], set()
    for name in sorted({n for n in ours if "/" not in n} - wanted):  # no longer shipped
        (archive / name).unlink(missing_ok=True)
        if stem_of(name) not in {stem_of(w) for w in wanted}:
            (archive / "cards" / f"{stem_of(name)}.md").unlink(missing_ok=True)
        changes.append(f"removed {name}")
    for name in sorted(wanted):
        trained = [p for p in present if stem_of(p) == stem_of(name) and p not in ours]
        if trained:
            changes.append(f"kept the archive's own {', '.join(trained)} "
                           f"(shipped {name} not installed)")
            continue
        card = shipped / "cards" / f"{stem_of(name)}.md"
        if name not in present:
            shutil.copyfile(shipped / name, archive / name)
            changes.append(f"installed {name}")
        if card.exists() and (not (archive / "cards" / card.name).exists() or
                              (archive / "cards" / card.name).read_bytes() != card.read_bytes()):
            shutil.copyfile(card, archive / "cards" / card.name)
        installed.add(name)
    decoder_changes, decoders = _install_shipped_decoders(shipped, archive, installed, ours)
    changes += decoder_changes
    installed |= decoders
    manifest.write_text("".join(f"{n}\n" for n in sorted(installed)))
    if os.geteuid() == 0:   # DaCHS's files belong to dachsroot, readable by gavo
        for path in [archive.parent, archive, *archive.rglob("*")]:
            shutil.chown(path, "dachsroot", "gavo")
    return changes


def _install_shipped_decoders(shipped: Path, archive: Path, installed: set,
                              ours: set) -> tuple[list[str], set[str]]:
    """The decoders (``decoders/``) of the shipped models deploy installed;
    a decoder the archive wrote for its own space stays.  Returns what
    changed and the manifest entries (``decoders/<file>``) of the shipped
    decoders now installed."""
    import shutil
    source, target = shipped / DECODER_DIR, archive / DECODER_DIR
    target.mkdir(exist_ok=True)
    installed_stems = {stem_of(n) for n in installed}
    wanted = {p.name for p in source.glob("*.onnx") if stem_of(p.name) in installed_stems}
    changes = []
    for path in sorted(target.glob("*.onnx")):   # earlier shipped versions
        if f"{DECODER_DIR}/{path.name}" in ours and path.name not in wanted:
            path.unlink()
            changes.append(f"removed {DECODER_DIR}/{path.name}")
    for name in sorted(wanted):
        if not (target / name).exists():
            shutil.copyfile(source / name, target / name)
            changes.append(f"installed {DECODER_DIR}/{name}")
    return changes, {f"{DECODER_DIR}/{name}" for name in wanted}


def link_cards(resdir: Path) -> None:
    """Serve the installed models' cards (``<models>/cards``) as static
    files of the resource directory (``resdir/cards``)."""
    from retrspect.ingest.infer import model_dir_from_environment
    target = Path(model_dir_from_environment()).resolve() / "cards"
    link = Path(resdir) / "cards"
    if link.is_symlink() and Path(os.readlink(link)) == target:
        return
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(target)


def import_new() -> None:
    """Import new source files (incremental), then re-embed what the current
    model versions must, one space at a time (each atomically)."""
    spaces = check_models()
    sync_space_tables()
    server.dachs("imp", "-c", RD_ID)
    # one transaction per data: each space is swapped alone; the views and
    # the spaces table (its counts follow the data) come after
    server.dachs("imp", RD_ID, "reembed", *[f"reembed_{s}" for s in spaces],
                 *[f"view_{s}" for s in spaces], "make_spaces")
    # the import re-makes the view when it adds rows; make it if it is missing
    if not table_exists("retrspect.spectra"):
        server.dachs("imp", RD_ID, "make_view")
    # the campaign tables are made once and never dropped (labels are kept)
    if not all(table_exists(f"retrspect.{t}") for t in CAMPAIGN_TABLES):
        server.dachs("imp", RD_ID, "make_campaigns")
    server.dachs("pub", RD_ID)
    from retrspect.vo_services import replica
    waited = replica.wait_caught_up()
    if waited > 1.0:
        print(f"[import] the replica caught up in {waited:.1f} s")
    server.reload()
