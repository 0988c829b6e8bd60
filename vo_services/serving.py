"""Serve with several DaCHS processes behind HAProxy, kept up by supervisord.

One DaCHS server process is single-threaded Python: it uses one core.  The
archive runs ``N`` of them (default: one per core), each ``dachs serve start
-f`` with its own rc file (``GAVOSETTINGS``) that differs from
``/etc/gavo.rc`` only in ``serverPort``; ``serverURL`` stays the public
address, so every link a process writes points at the balancer.  They share
the database, the stateDir and the UWS directory, so an async job created
through one process is seen by all.

HAProxy listens on the public port and spreads requests over the processes
(least connections).  A request whose process dies (connection refused,
reset or empty answer) is retried on another process; POST bodies are
buffered so they can be re-sent, and each process holds a response until
it is complete (:func:`hold_responses_until_complete`), because HAProxy can
retry only while nothing of the answer has gone out.  supervisord restarts a process that exits
or is killed.  Both run from this project's own configuration in
``/etc/retrspect`` (not the Debian packages' services, which need an init
system), written by :func:`write_config` and controlled by
``retrspect serve start|stop|status``.

DaCHS limits running async TAP jobs with ``[async] maxTAPRunning`` by
counting the EXECUTING jobs in the shared jobs table, so the configured
limit holds for all processes together and every rc keeps it unchanged.
"""
from __future__ import annotations

import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from retrspect.ingest.errors import RetrspectError

#: where the serving configuration is written
CONF_DIR = Path(os.environ.get("RETRSPECT_ETC", "/etc/retrspect"))
#: the first DaCHS process listens on BACKEND_BASE_PORT + 1, and so on
BACKEND_BASE_PORT = int(os.environ.get("RETRSPECT_BACKEND_BASE_PORT", "9080"))
SOCKET = Path("/run/retrspect-supervisor.sock")
#: what HAProxy and ``retrspect check`` ask a DaCHS process to see it answers
#: (a static file: about 1 ms)
HEALTH_PATH = "/robots.txt"
PROGRAM = "web"


class ServingError(RetrspectError, RuntimeError):
    """The serving processes could not be configured, started or asked."""


def process_count() -> int:
    """``RETRSPECT_WEB_PROCESSES``, else the cores this machine lets us use."""
    value = os.environ.get("RETRSPECT_WEB_PROCESSES")
    if value:
        if not value.isdigit() or int(value) < 1:
            raise ServingError(f"RETRSPECT_WEB_PROCESSES={value!r}: a positive integer")
        return int(value)
    return max(1, len(os.sched_getaffinity(0)))


def backend_ports(n: int | None = None) -> list[int]:
    return [BACKEND_BASE_PORT + i for i in range(1, (n or process_count()) + 1)]


def process_rc(base_rc: str, port: int) -> str:
    """``/etc/gavo.rc`` with the process's own ``serverPort``."""
    text, found = re.subn(r"(?m)^serverPort:.*$", f"serverPort: {port}", base_rc)
    if not found:
        raise ServingError("/etc/gavo.rc has no [web] serverPort line")
    return f"# written by retrspect (vo_services/serving.py) from /etc/gavo.rc\n{text}"


#: requests one DaCHS process serves at once (HAProxy queues the rest);
#: measured with the serving benchmark's 32 clients on 2 cores: 1 -> 31.4,
#: 2 -> 35.5, 3 -> 29.8, 4 -> 28.2, 32 -> 22-31 requests/s
PER_PROCESS_CONNECTIONS = int(os.environ.get("RETRSPECT_PER_PROCESS_CONNECTIONS", "2"))


def haproxy_config(public_port: int, ports: list[int]) -> str:
    """The balancer: least connections, health checks, retries on another
    process when one dies under a request (GET and POST alike)."""
    servers = "\n".join(f"    server web{i} 127.0.0.1:{port} check"
                        for i, port in enumerate(ports, start=1))
    per_process = PER_PROCESS_CONNECTIONS
    return f"""# written by retrspect (vo_services/serving.py)
global
    maxconn 1024
    # a POST is retried only if its whole body fits the buffer
    tune.bufsize 262144

defaults
    mode http
    log stdout format raw local0 err
    option httplog
    timeout connect 2s
    timeout client 10m
    timeout server 10m
    timeout http-request 30s
    timeout queue 5m
    # a request whose process died is sent again, to another process
    retries 5
    option redispatch 1
    retry-on conn-failure empty-response junk-response response-timeout 503
    option http-buffer-request

frontend public
    bind 127.0.0.1:{public_port}
    default_backend dachs

backend dachs
    balance leastconn
    option httpchk GET {HEALTH_PATH}
    http-check expect status 200
    # a DaCHS process runs Python under one lock: a few requests at a time
    # each, the rest wait in HAProxy's queue rather than thrash that lock
    # a process whose connection fails is taken out at once (not after the
    # next health checks), so the retries go to the others
    default-server inter 500ms fall 1 rise 2 observe layer4 error-limit 1 on-error mark-down maxconn {per_process}
{servers}
"""


def supervisord_config(n: int, venv_bin: Path, logs: Path) -> str:
    """supervisord's configuration: N DaCHS processes and HAProxy."""
    return f"""; written by retrspect (vo_services/serving.py)
[unix_http_server]
file={SOCKET}
chmod=0700

[supervisord]
logfile={logs}/supervisord.log
pidfile=/run/retrspect-supervisord.pid
childlogdir={logs}

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{SOCKET}

[program:{PROGRAM}]
process_name=%(program_name)s%(process_num)d
numprocs={n}
numprocs_start=1
command={venv_bin}/dachs serve start -f
environment=GAVOSETTINGS="{CONF_DIR}/gavo-web%(process_num)d.rc",PATH="{venv_bin}:/usr/bin:/bin"
user=dachsroot
autorestart=true
startsecs=2
startretries=10
; TERM lets a process finish what it serves; its async jobs run on
stopsignal=TERM
stopwaitsecs=20
redirect_stderr=true
stdout_logfile={logs}/%(program_name)s%(process_num)d.log
stdout_logfile_maxbytes=10MB

[program:taprun]
; async TAP jobs forked from a process with DaCHS and the RDs loaded
command={venv_bin}/python -m retrspect.vo_services.taprun_server
environment=PATH="{venv_bin}:/usr/bin:/bin"
user=dachsroot
autorestart=true
startsecs=1
redirect_stderr=true
stdout_logfile={logs}/taprun.log
stdout_logfile_maxbytes=10MB

[program:balancer]
command=/usr/sbin/haproxy -db -f {CONF_DIR}/haproxy.cfg
autorestart=true
startsecs=1
redirect_stderr=true
stdout_logfile={logs}/haproxy.log
stdout_logfile_maxbytes=10MB
"""


def write_config(public_port: int, venv_bin: Path, logs: Path, n: int | None = None
                 ) -> bool:
    """Write the rc files, HAProxy's and supervisord's configuration for
    ``n`` processes (default: :func:`process_count`) behind ``public_port``;
    returns whether anything changed."""
    n = n or process_count()
    base_rc = Path(os.environ.get("GAVOSETTINGS", "/etc/gavo.rc")).read_text()
    ports = backend_ports(n)
    files = {f"gavo-web{i}.rc": process_rc(base_rc, port)
             for i, port in enumerate(ports, start=1)}
    files["haproxy.cfg"] = haproxy_config(public_port, ports)
    files["supervisord.conf"] = supervisord_config(n, venv_bin, logs)
    CONF_DIR.mkdir(parents=True, exist_ok=True)
    changed = False
    for name, text in files.items():
        path = CONF_DIR / name
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            changed = True
    for stale in CONF_DIR.glob("gavo-web*.rc"):
        if stale.name not in files:
            stale.unlink()
            changed = True
    return changed


def _ctl(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["supervisorctl", "-c", str(CONF_DIR / "supervisord.conf"),
                             *args], capture_output=True, text=True)
    # supervisorctl exits 3 when a listed process is not RUNNING
    if check and result.returncode not in (0, 3):
        raise ServingError(f"supervisorctl {' '.join(args)}: "
                           f"{(result.stdout + result.stderr).strip()[-1000:]}")
    return result


def supervisor_running() -> bool:
    return SOCKET.exists() and _ctl("pid", check=False).stdout.strip().isdigit()


@dataclass
class Process:
    """One supervised process as supervisorctl reports it."""

    name: str
    state: str
    pid: int | None
    port: int | None

    @property
    def running(self) -> bool:
        return self.state == "RUNNING"


def processes() -> list[Process]:
    """Every supervised process (the DaCHS processes by port, then the
    balancer and the warm TAP workers)."""
    if not supervisor_running():
        return []
    out = []
    for line in _ctl("status").stdout.splitlines():
        parts = line.split()
        if len(parts) < 2:
            continue
        name = parts[0].split(":")[-1]
        pid = re.search(r"pid (\d+)", line)
        number = re.fullmatch(rf"{PROGRAM}(\d+)", name)
        out.append(Process(name, parts[1], int(pid.group(1)) if pid else None,
                           BACKEND_BASE_PORT + int(number.group(1)) if number else None))
    return sorted(out, key=lambda p: (p.port is None, p.port or 0))


def start() -> None:
    """Start supervisord (and with it every process), or bring a running
    one in line with the configuration just written."""
    if not supervisor_running():
        subprocess.run(["supervisord", "-c", str(CONF_DIR / "supervisord.conf")],
                       check=True, capture_output=True, text=True)
        deadline = time.monotonic() + 10
        while not supervisor_running() and time.monotonic() < deadline:
            time.sleep(0.2)
        if not supervisor_running():
            raise ServingError("supervisord did not start; see "
                               "/var/gavo/logs/supervisord.log")
        return
    _ctl("reread")
    _ctl("update")
    _ctl("start", "all")


def restart() -> None:
    """Restart every process: new code, models or configuration (HAProxy
    reads its configuration only at start)."""
    _ctl("restart", f"{PROGRAM}:*", "taprun", "balancer")


def stop() -> None:
    """Stop every process and supervisord itself; nothing is left behind."""
    if not supervisor_running():
        return
    pid = int(_ctl("pid").stdout.strip())
    _ctl("shutdown", check=False)
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    raise ServingError(f"supervisord (pid {pid}) did not stop")


def reload() -> None:
    """Make every DaCHS process re-read RDs (SIGHUP clears DaCHS's caches),
    and restart the warm TAP workers, whose RDs are parsed at start."""
    if supervisor_running():
        _ctl("signal", "HUP", f"{PROGRAM}:*")
        if any(p.name == "taprun" for p in processes()):
            _ctl("restart", "taprun")


#: how long past its time limit a sync TAP job may stay EXECUTING before it
#: is taken as orphaned by a server process that died under it
ORPHAN_GRACE_S = 30


def clear_orphaned_sync_jobs() -> None:
    """Hooked into ``gavo.protocols.uws`` (every DaCHS process): a sync TAP
    job is a row EXECUTING with pid -1 while its server process runs the
    query; if that process is killed, the row stays EXECUTING for ever and
    counts against ``maxTAPRunning``, so async jobs stop starting.  DaCHS
    clears dead async runners (by pid) when the queue is stuck; this ends,
    each time the queue is processed, the sync jobs whose time limit
    (``defaultExecTimeSync``, when the query's statement timeout ended it
    anyway) passed ``ORPHAN_GRACE_S`` ago."""
    from gavo import base
    from gavo.protocols import uws
    original = uws.UWSWithQueueing._processQueue
    if getattr(original, "clears_sync_orphans", False):
        return

    def _processQueue(self):
        # before the queue is looked at, not after DaCHS found it blocked:
        # a job queued behind the orphans then starts at once rather than
        # at the next time something touches the queue
        table = self.jobClass.jobsTD.getQName()
        with base.getTableConn() as conn:
            orphans = [row[0] for row in conn.query(
                f"SELECT jobId FROM {table} WHERE phase = 'EXECUTING' AND pid < 2 "
                "AND startTime < (now() AT TIME ZONE 'UTC') "
                "- make_interval(secs => executionDuration + %(grace)s)",
                {"grace": ORPHAN_GRACE_S})]
        for job_id in orphans:
            self.changeToPhase(job_id, "ERROR", uws.UWSError(
                f"Sync job {job_id} outlived its server process.", job_id))
            base.ui.notifyError(f"Orphaned sync TAP job cleared: {job_id}")
        return original(self)

    _processQueue.clears_sync_orphans = True
    uws.UWSWithQueueing._processQueue = _processQueue


#: a response up to this size is held in its DaCHS process until it is
#: complete; a larger one is streamed from there on
HELD_RESPONSE_LIMIT = 32 * 2**20


def hold_responses_until_complete() -> None:
    """Hooked into ``gavo.web.common`` (every DaCHS server process): send
    nothing until the response is complete, then send it with a
    ``Content-Length``.

    HAProxy can retry a request only while nothing of its answer has
    reached the client.  DaCHS streams (TAP, SSAP and getData VOTables
    begin to go out before they are finished), so a process killed in the
    middle left the client with a truncated chunked body.  Held, the same
    kill is an empty answer, which HAProxy re-sends to another process.

    Responses above :data:`HELD_RESPONSE_LIMIT`, and those fed by a pull
    producer (static files, which wait for the socket to drain), stream as
    before.  An error status set while a body is held replaces that body
    (DaCHS renders its error page), where streaming could only append to
    a ``200``."""
    from gavo import utils
    from gavo.web import common
    Request = common.Request
    if getattr(Request, "holds_responses", False):
        return
    write, finish = Request.write, Request.finish
    register, set_code = Request.registerProducer, Request.setResponseCode

    def _held(request) -> list | None:
        if request.__dict__.get("_streaming") or request.finished \
                or getattr(request, "channel", None) is None:
            return None
        return request.__dict__.setdefault("_held", [])

    def _release(request) -> None:
        held = request.__dict__.pop("_held", [])
        request._streaming = True
        if held:
            write(request, b"".join(held))

    def _send_whole(request, held: list) -> None:
        body, encoder = b"".join(held), getattr(request, "_encoder", None)
        if encoder is not None:         # gzip the whole body: its length is known
            body = encoder.encode(body) + encoder.finish()
            request._encoder = None
        if request.method != b"HEAD" and not request.responseHeaders.hasHeader(
                b"content-length"):
            request.setHeader(b"content-length", b"%d" % len(body))
        request.__dict__.pop("_held", None)
        request._streaming = True
        write(request, body)

    def held_write(self, payload):
        held = _held(self)
        if held is None:
            return write(self, payload)
        held.append(utils.bytify(payload))
        self._held_size = getattr(self, "_held_size", 0) + len(held[-1])
        if self._held_size > HELD_RESPONSE_LIMIT:
            _release(self)

    def held_finish(self):
        held = _held(self)
        if held is not None:
            _send_whole(self, held)
        return finish(self)

    def held_register(self, producer, streaming):
        if not streaming:
            _release(self)
        return register(self, producer, streaming)

    def held_set_code(self, code, message=None):
        if code >= 400 and self.__dict__.get("_held"):
            self._held, self._held_size = [], 0
        return set_code(self, code, message)

    Request.write, Request.finish = held_write, held_finish
    Request.registerProducer, Request.setResponseCode = held_register, held_set_code
    Request.holds_responses = True
