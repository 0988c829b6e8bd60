"""Run DaCHS for retrspect: the resdir link, imports and the web server
(several processes behind a balancer: :mod:`retrspect.vo_services.serving`).

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
    from retrspect.ingest.infer import model_dir_from_environment
    for path in sorted(model_dir_from_environment().glob("*.onnx")):
        digest.update(path.name.encode())
    return digest.hexdigest()


def serves_installed_code() -> bool:
    """Whether the server was started with the code and models installed now."""
    return (FINGERPRINT_FILE.exists()
            and FINGERPRINT_FILE.read_text() == code_fingerprint())


def backends_answering() -> dict[int, bool]:
    """Each DaCHS process's port, and whether it answers."""
    from retrspect.vo_services import serving
    return {port: _http_ok(f"http://127.0.0.1:{port}{serving.HEALTH_PATH}", timeout=2.0)
            for port in serving.backend_ports()}


def _stop_single_daemon() -> None:
    """Stop a ``dachs serve start`` daemon (one process on the public port,
    as earlier versions ran): the balancer takes that port now."""
    if (GAVO_ROOT / "state" / "web.pid").exists():
        dachs("serve", "stop", check=False, capture=True)


def start(timeout: float = 120.0) -> str:
    """Start the DaCHS processes and the balancer if they are not up; wait
    until every process serves.

    Processes whose code or models are older than the installed ones, or
    whose configuration changed, are restarted, so a deploy never leaves
    stale code serving.
    """
    from retrspect.vo_services import serving
    changed = serving.write_config(server_port(), venv_bin(), GAVO_ROOT / "logs")
    if serving.supervisor_running():
        current = (serves_installed_code() and not changed
                   and all(p.running for p in serving.processes()))
        if current and is_running():
            return f"already serving on {base_url()} ({describe_processes()})"
        serving.start()
        serving.restart()
    else:
        _stop_single_daemon()
        serving.start()
    FINGERPRINT_FILE.write_text(code_fingerprint())
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if is_running() and all(backends_answering().values()):
            return f"serving on {base_url()} ({describe_processes()})"
        time.sleep(0.5)
    raise ServerError(f"DaCHS did not answer on {base_url()} within "
                      f"{timeout:.0f} s; see {GAVO_ROOT}/logs/web*.log and dcErrors")


def stop() -> str:
    """Stop every DaCHS process, the balancer and supervisord."""
    from retrspect.vo_services import serving
    _stop_single_daemon()
    if not serving.supervisor_running():
        return "not running"
    serving.stop()
    return "stopped"


def reload() -> None:
    """Make every running DaCHS process re-read RDs after an import."""
    from retrspect.vo_services import serving
    serving.reload()


def describe_processes() -> str:
    """One line: each supervised process, its state, pid and port."""
    from retrspect.vo_services import serving
    return ", ".join(f"{p.name} {p.state.lower()}"
                     + (f" pid {p.pid}" if p.pid else "")
                     + (f" port {p.port}" if p.port else "")
                     for p in serving.processes()) or "no processes"


def status() -> str:
    if not is_running():
        return f"not running ({describe_processes()})"
    return f"serving on {base_url()}: {describe_processes()}"


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
