"""Run DaCHS for retrspect: the resdir link, imports and the web server.

Every DaCHS command runs through the venv's ``dachs`` wrapper (set up by
``scripts/setup_python.sh``) so that the server, ``dachs imp`` and the async
TAP workers (``gavo taprun``, found on PATH) all run on the venv's Python and
load :mod:`retrspect.vo_services.dachs_hook`.  Commands run as ``dachsroot`` when
started by root, because files under /var/gavo must belong to DaCHS.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from retrspect.ingest.errors import RetrspectError

#: the resource directory's name in DaCHS's inputs (so the RD is retrspect/q)
RD_DIR = "retrspect"
GAVO_ROOT = Path(os.environ.get("RETRSPECT_GAVO_ROOT", "/var/gavo"))


class ServerError(RetrspectError, RuntimeError):
    """DaCHS could not be started, stopped or asked."""


def venv_bin() -> Path:
    return Path(sys.executable).parent


def server_port() -> int:
    """The port from /etc/gavo.rc (set-up writes it), default 8080."""
    from configparser import ConfigParser
    rc = ConfigParser()
    rc.read(os.environ.get("GAVOSETTINGS", "/etc/gavo.rc"))
    return rc.getint("web", "serverPort", fallback=8080)


def base_url() -> str:
    return f"http://localhost:{server_port()}"


def dachs_env() -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{venv_bin()}:{env.get('PATH', '/usr/bin:/bin')}"
    return env


def dachs(*args: str, check: bool = True, capture: bool = False
          ) -> subprocess.CompletedProcess:
    """Run a DaCHS command on the venv's Python, as dachsroot if we are root."""
    cmd = [str(venv_bin() / "dachs"), *args]
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", "dachsroot", "--", *cmd]
    result = subprocess.run(cmd, env=dachs_env(), text=True,
                            capture_output=capture)
    if check and result.returncode != 0:
        detail = (result.stderr or "").strip()[-2000:] if capture else ""
        raise ServerError(f"'dachs {' '.join(args)}' failed "
                          f"(exit {result.returncode}) {detail}")
    return result


def link_resdir(resdir: Path) -> Path:
    """Make ``inputs/retrspect`` point at ``resdir`` (idempotent)."""
    resdir = resdir.resolve()
    if not (resdir / "q.rd").exists():
        raise ServerError(f"{resdir} has no q.rd")
    if os.geteuid() == 0 and subprocess.run(
            ["runuser", "-u", "gavo", "--", "test", "-r", str(resdir / "q.rd")]
    ).returncode != 0:
        raise ServerError(f"{resdir} is not readable by the DaCHS server's "
                          "user 'gavo'; check out retrspect where every user "
                          "can read it (not under /root)")
    link = GAVO_ROOT / "inputs" / RD_DIR
    if link.is_symlink() and link.resolve() == resdir:
        return link
    if link.is_symlink():
        link.unlink()
    elif link.exists():
        raise ServerError(f"{link} exists and is not a symlink; "
                          "move it away to let retrspect manage it")
    link.symlink_to(resdir)
    return link


def _http_ok(url: str, timeout: float = 5.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def is_running() -> bool:
    return _http_ok(f"{base_url()}/tap/availability")


FINGERPRINT_FILE = GAVO_ROOT / "state" / "retrspect-code.sha256"


def code_fingerprint() -> str:
    """Hash of the installed code and models DaCHS loads.

    The server keeps the ONNX sessions of search by example in memory, so a
    new model set (file names carry content hashes) restarts it like code.
    """
    import hashlib
    from importlib.util import find_spec
    digest = hashlib.sha256()
    for package in ("retrspect.ingest", "retrspect.vo_services"):
        directory = Path(find_spec(package).submodule_search_locations[0])
        for path in sorted(directory.rglob("*.py")):
            digest.update(str(path.relative_to(directory)).encode()
                          + path.read_bytes())
    models = Path(find_spec("retrspect.models").submodule_search_locations[0])
    for path in sorted(models.glob("*.onnx")):
        digest.update(path.name.encode())
    return digest.hexdigest()


def serves_installed_code() -> bool:
    """Whether the server was started with the code and models installed now."""
    return (FINGERPRINT_FILE.exists()
            and FINGERPRINT_FILE.read_text() == code_fingerprint())


def start(timeout: float = 60.0) -> str:
    """Start the DaCHS server (daemon) if it is not up; wait until it serves.

    A running server whose code is older than the installed code is
    restarted, so a deploy never leaves stale code serving.
    """
    if is_running():
        if serves_installed_code():
            return f"already serving on {base_url()}"
        stop()
    dachs("serve", "start")
    FINGERPRINT_FILE.write_text(code_fingerprint())
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if is_running():
            return f"serving on {base_url()}"
        time.sleep(0.5)
    raise ServerError(f"DaCHS did not answer on {base_url()} within "
                      f"{timeout:.0f} s; see {GAVO_ROOT}/logs/dcErrors")


def stop(timeout: float = 30.0) -> str:
    if not is_running():
        return "not running"
    dachs("serve", "stop", check=False)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and is_running():
        time.sleep(0.5)
    if is_running():
        raise ServerError("DaCHS did not stop")
    return "stopped"


def reload() -> None:
    """Make a running server re-read RDs after an import."""
    if is_running():
        dachs("serve", "reload", check=False, capture=True)


def status() -> str:
    return f"serving on {base_url()}" if is_running() else "not running"


def install_tap_examples(examples: Path) -> bool:
    """Splice ``examples`` (a tapexamples STREAM) into DaCHS's userconfig.rd.

    DaCHS 2.7 serves /tap/examples from the ``tapexamples`` STREAM of
    ``etc/userconfig.rd``.  We start from DaCHS's own default userconfig so
    nothing else in it changes.  Returns True if the file changed (the
    server must then be restarted to see it).
    """
    import re
    from importlib.util import find_spec
    system_rd = (Path(find_spec("gavo").submodule_search_locations[0])
                 / "resources" / "inputs" / "__system__" / "userconfig.rd")
    stream = re.sub(r"^<!--.*?-->\s*", "", examples.read_text(), flags=re.S)
    text = re.sub(r'<STREAM id="tapexamples">.*?</STREAM>',
                  lambda _: stream.strip(), system_rd.read_text(),
                  count=1, flags=re.S)
    target = GAVO_ROOT / "etc" / "userconfig.rd"
    if target.exists() and target.read_text() == text:
        return False
    target.write_text(text)
    if os.geteuid() == 0:
        import shutil
        shutil.chown(target, "dachsroot", "gavo")
    return True
