"""Load retrspect's extensions into every DaCHS process.

DaCHS 2.7 has no configuration option for a site's own ADQL functions or
column types, and it resolves them in every process that parses ADQL or
writes tables: the server, each async TAP worker (``gavo taprun``) and
``dachs imp``.  Set-up installs a one-line ``.pth`` file into the venv that
calls :func:`install`; it adds an import hook that runs our registration
code right after the DaCHS module it extends has finished importing.

This module must stay tiny and import nothing heavy: the ``.pth`` line runs
at the start of every Python process in the venv (pip included).
"""
from __future__ import annotations

import importlib.abc
import importlib.util
import sys

#: DaCHS module -> "package.module:function" (or a tuple of them) run once
#: that module is loaded
EXTENSIONS = {
    "gavo.adql.ufunctions": "retrspect.vo_services.extensions:register_adql_functions",
    "gavo.base.typesystems": "retrspect.vo_services.extensions:teach_vector_type",
    "gavo.base.sqlsupport": "retrspect.vo_services.extensions:read_vectors_as_arrays",
    "gavo.votable.enc_tabledata":
        "retrspect.vo_services.extensions:write_null_float_arrays_as_nan",
    "gavo.formats.jsontable": "retrspect.vo_services.extensions:write_arrays_in_json",
    "gavo.protocols.dali": "retrspect.vo_services.uploads:guard_dali_url_uploads",
    "gavo.protocols.uws": "retrspect.vo_services.serving:clear_orphaned_sync_jobs",
    "gavo.web.common": "retrspect.vo_services.serving:hold_responses_until_complete",
    "gavo.protocols.taprunner": ("retrspect.vo_services.uploads:guard_tap_url_uploads",
                                 "retrspect.vo_services.replica:route_uploads_to_primary"),
}

#: names of the extensions that ran in this process (for tests and logs)
loaded: list[str] = []


def _targets(targets) -> tuple:
    return (targets,) if isinstance(targets, str) else tuple(targets)


def _run(targets) -> None:
    for target in _targets(targets):
        module_name, func_name = target.split(":")
        module = importlib.import_module(module_name)
        getattr(module, func_name)()
        loaded.append(target)


class _AfterImportLoader(importlib.abc.Loader):
    """Wraps a module's loader to run an extension once the module exists."""

    def __init__(self, wrapped, target):
        self.wrapped, self.target = wrapped, target

    def create_module(self, spec):
        return self.wrapped.create_module(spec)

    def exec_module(self, module):
        self.wrapped.exec_module(module)
        _run(self.target)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname not in EXTENSIONS:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            sys.meta_path.insert(0, self)
        if spec is not None and spec.loader is not None:
            spec.loader = _AfterImportLoader(spec.loader, EXTENSIONS[fullname])
        return spec


def install() -> None:
    """Add the import hook (idempotent); already-imported modules run now."""
    if any(isinstance(f, _Finder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _Finder())
    for name, target in EXTENSIONS.items():
        if name in sys.modules and not set(_targets(target)) <= set(loaded):
            _run(target)
