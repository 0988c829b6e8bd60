"""Shared fixtures: the running DaCHS stack, clients for it, database
helpers, small real ONNX test models and the benchmarks' helpers.

The stack is started by the README's commands (``make test`` runs set-up and
deploy first).  A test that needs it and finds it down fails: a skipped
integration test proves nothing.  Tests of the stack live in ``stack/``,
where ``stack/conftest.py`` marks them.  The code under test is the
installed ``retrspect`` package; this checkout provides the tests, the
resource directory and the README.
"""
from __future__ import annotations

import faulthandler
import json
import secrets
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import hostile_corpus
import numpy as np
import pytest
from hostile_corpus import PASSWD_MARKERS
from hypothesis.configuration import set_hypothesis_home_dir

from retrspect.ingest import contract
from retrspect.ingest.bundled import package_dir
from retrspect.ingest.preprocess import Grid
from retrspect.vo_services import server

# hypothesis keeps caches in .hypothesis/ of the working directory; tests
# write only into temporary directories (no example database either)
set_hypothesis_home_dir(str(Path(tempfile.gettempdir()) / "retrspect-hypothesis"))

#: the checkout these tests belong to
CHECKOUT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def base_url() -> str:
    url = server.base_url()
    if not server.is_running():
        pytest.fail(f"DaCHS is not serving on {url}: run `make run` first")
    return url


@pytest.fixture
def browser():
    """Headless Chromium, laptop-sized; its console log is readable through
    ``get_log("browser")``."""
    sys.path.insert(0, str(CHECKOUT / "tests" / "benchmarks"))
    from common import headless_chromium
    driver = headless_chromium(log_console=True)
    yield driver
    driver.quit()


@pytest.fixture(scope="session")
def tap(base_url):
    import pyvo
    return pyvo.dal.TAPService(f"{base_url}/tap")


@pytest.fixture(scope="session")
def ssa(base_url):
    import pyvo
    return pyvo.dal.SSAService(f"{base_url}/retrspect/q/ssa/ssap.xml")


@pytest.fixture
def db():
    """A read-only connection to DaCHS's database (DaCHS's own profile).

    One per test: the fault tests restart PostgreSQL, which ends every
    connection opened before.
    """
    from gavo import base
    conn = base.getDBConnection("trustedquery")
    yield conn
    conn.close()


def _sql(db, query: str, params: dict | None = None) -> list[tuple]:
    """Rows of a query (psycopg2 parameters, never string formatting)."""
    with db.cursor() as cursor:
        cursor.execute(query, params or {})
        rows = cursor.fetchall()
    db.rollback()
    return rows


def _psql(query: str, port: int = 5432) -> str:
    """Output of one SQL statement run by psql as the postgres superuser
    (for what the DaCHS roles may not see or do: other sessions, DDL), on
    the primary or, with ``port=5433``, on the read replica set-up builds."""
    import subprocess
    return subprocess.run(["runuser", "-u", "postgres", "--", "psql", "-p", str(port),
                           "-d", "gavo", "-tA", "-c", query], capture_output=True,
                          text=True, check=True).stdout.strip()


@pytest.fixture(scope="session")
def sql():
    """``sql(db, query, params)``: rows of a query on a connection."""
    return _sql


@pytest.fixture(scope="session")
def psql():
    """``psql(query, port=5432)``: one statement's output, as the postgres
    superuser (``port=5433``: on the read replica)."""
    return _psql


@pytest.fixture(scope="session")
def checkout() -> Path:
    """The checkout these tests belong to (resdir, README, models/)."""
    return CHECKOUT


SCRATCH_ROWS = 100_000


@pytest.fixture(scope="session")
def scratch_latents():
    """100k-row copies of the ML and spectra tables for query-plan tests.

    PostgreSQL prefers a sequential scan on tables as small as the demo's,
    so index use is checked on tables of a realistic size.  They live in
    their own schema, are made once and kept (a second run reuses them).
    """
    from gavo import base

    from retrspect.vo_services.similarity import latent_column
    ops = {"cosine": "vector_cosine_ops", "l2": "vector_l2_ops"}[
        latent_column().metric]
    conn = base.getDBConnection("admin")
    with conn.cursor() as cursor:
        cursor.execute("SELECT to_regclass('retrspect_scratch.ml_big') "
                       "IS NOT NULL")
        exists = cursor.fetchone()[0]
        if exists:
            cursor.execute("SELECT COUNT(*) FROM retrspect_scratch.ml_big")
            exists = cursor.fetchone()[0] == SCRATCH_ROWS
        if exists:  # the index must serve the metric the model is for
            cursor.execute("SELECT indexdef FROM pg_indexes WHERE indexname "
                           "= 'ml_big_latent_hnsw'")
            found = cursor.fetchone()
            exists = bool(found) and ops in found[0]
        if not exists:
            cursor.execute("""
                DROP SCHEMA IF EXISTS retrspect_scratch CASCADE;
                CREATE SCHEMA retrspect_scratch;
                CREATE TABLE retrspect_scratch.ml_big AS
                SELECT 'ivo://scratch/' || g AS pubdid, 'o' || g AS obs_id,
                  (SELECT '[' || string_agg(
                     (random() - 0.5)::real::text, ',') || ']'
                   FROM generate_series(1, 32) WHERE g > 0)::vector(32)
                   AS latent,
                  CASE WHEN g %% 1000 = 0 THEN 'qso'
                       ELSE (ARRAY['O','B','A','F','G','K','M'])[1 + g %% 7]
                  END AS ml_class,
                  (random() * 100)::real AS snr
                FROM generate_series(1, %(n)s) AS g;
                ALTER TABLE retrspect_scratch.ml_big ADD PRIMARY KEY (pubdid);
                CREATE INDEX ml_big_ml_class ON retrspect_scratch.ml_big (ml_class);
                CREATE INDEX ml_big_latent_hnsw ON retrspect_scratch.ml_big
                  USING hnsw (latent """ + ops + """);
                CREATE TABLE retrspect_scratch.spectra_big AS
                SELECT pubdid AS ssa_pubdid, 'star ' || obs_id AS ssa_targname
                FROM retrspect_scratch.ml_big;
                ALTER TABLE retrspect_scratch.spectra_big
                  ADD PRIMARY KEY (ssa_pubdid);
                ANALYZE retrspect_scratch.ml_big;
                ANALYZE retrspect_scratch.spectra_big;
            """, {"n": SCRATCH_ROWS})
            conn.commit()
    yield {"conn": conn,
           "tables": {"retrspect.ml_results": "retrspect_scratch.ml_big",
                      "retrspect.spectra": "retrspect_scratch.spectra_big"}}
    conn.close()


# ------------------------------------------------ small real ONNX models ----
# Ingest tests need models whose outputs they can predict exactly: linear
# torch modules exported to ONNX with the contract's metadata, so every code
# path of retrspect.ingest.infer runs on real ONNX files.

LABELS = ["O", "B", "A", "F", "G", "K", "M", "emission_line_star", "galaxy",
          "qso"]
#: a coarse grid covering MILES (fast to export and run)
TEST_GRID = Grid.spanning(3600.0, 7400.0, 256)


def _torch_modules(npix: int, latent_dim: int, seed: int):
    import torch
    from torch import nn

    torch.manual_seed(seed)

    class Vae(nn.Module):
        def __init__(self):
            super().__init__()
            self.mean = nn.Linear(npix, latent_dim)
            self.logvar = nn.Linear(npix, latent_dim)
            self.decode = nn.Linear(latent_dim, npix)

        def forward(self, flux, weight):
            mean = self.mean(flux)
            rec = self.decode(mean)
            anomaly = (weight * (flux - rec) ** 2).sum(1) / weight.sum(1).clamp(min=1)
            return mean, self.logvar(flux), rec, anomaly

    class Classifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(npix, len(LABELS))

        def forward(self, flux, weight):
            p = torch.softmax(self.linear(flux * (weight > 0)), dim=1)
            return p, -(p * torch.log(p.clamp(min=1e-12))).sum(1)

    class Velocity(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(npix, 2)

        def forward(self, flux, weight):
            out = self.linear(flux * (weight > 0)) * 1e-4
            return out[:, 0], nn.functional.softplus(out[:, 1]) * 1e-3

    return {"vae": (Vae(), list(contract.OUTPUTS["vae"])),
            "classifier": (Classifier(), list(contract.OUTPUTS["classifier"])),
            "velocity": (Velocity(), list(contract.OUTPUTS["velocity"]))}


def _write_test_models(directory: Path, *, latent_dim: int = 32,
                      grid: Grid = TEST_GRID, version: str = "0.0.1",
                      metric: str = "l2", seed: int = 0,
                      kinds=("vae", "classifier", "velocity"),
                      extra: dict | None = None) -> dict:
    """Export the test models into ``directory``; returns kind -> path.
    ``extra``: kind -> further metadata entries (keys without the prefix)."""
    import onnx
    import torch

    directory.mkdir(parents=True, exist_ok=True)
    written = {}
    for kind, (module, outputs) in _torch_modules(grid.npix, latent_dim,
                                                  seed).items():
        if kind not in kinds:
            continue
        module.eval()
        example = (torch.ones(2, grid.npix), torch.ones(2, grid.npix))
        tmp = directory / f"{kind}.tmp"
        torch.onnx.export(module, example, str(tmp), dynamo=False,
                          opset_version=17, input_names=["flux", "weight"],
                          output_names=outputs,
                          dynamic_axes={n: {0: "batch"} for n in
                                        ["flux", "weight", *outputs]})
        model = onnx.load(str(tmp))
        tmp.unlink()
        meta = {"retrspect.model": kind, "retrspect.version": version,
                "retrspect.grid": grid.to_json(),
                "retrspect.normalisation": "test", "retrspect.opset": "17",
                "retrspect.training_data": "none (test model)",
                "retrspect.source_commit": "test", "retrspect.metrics": "{}"}
        if kind == "vae":
            meta.update({"retrspect.latent_dim": str(latent_dim),
                         "retrspect.metric": metric})
        if kind == "classifier":
            meta["retrspect.labels"] = json.dumps(LABELS)
        meta.update({contract.PREFIX + k: str(v) for k, v in (extra or {}).get(kind, {}).items()})
        for key, value in meta.items():
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
        data = model.SerializeToString()
        path = directory / contract.file_name(kind, data)
        path.write_bytes(data)
        written[kind] = path
    return written


#: the outputs of the test space model, as its retrspect.outputs maps them
SPACE_OUTPUTS = {
    "latent": {"role": "latent", "metric": "l2", "description": "test vector"},
    "level": {"role": "scalar", "unit": "", "ucd": "phot.flux;stat.mean",
              "description": "mean normalised flux"},
    "colour": {"role": "probabilities", "labels": ["blue", "red"]},
}


def _write_space_model(directory: Path, *, space: str = "tiny", dim: int = 8,
                       grid: Grid = TEST_GRID, frame: str = "observed",
                       version: str = "1.0.0", seed: int = 0,
                       metadata: dict | None = None) -> Path:
    """A plug-in space model under the contract, built with onnx.helper as
    a third party would: latent = (flux * (weight > 0)) @ W, level = the
    mean flux, colour = softmax of two projections.  ``metadata``
    overrides entries (keys without the prefix; None removes one), to
    break the contract on purpose."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    npix = grid.npix
    nodes = [
        helper.make_node("Greater", ["weight", "zero"], ["covered"]),
        helper.make_node("Cast", ["covered"], ["m"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["flux", "m"], ["masked"]),
        helper.make_node("MatMul", ["masked", "w"], ["latent"]),
        helper.make_node("ReduceMean", ["flux"], ["level"], axes=[1], keepdims=0),
        helper.make_node("MatMul", ["masked", "v"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["colour"], axis=1),
    ]
    inits = [numpy_helper.from_array(np.float32(0).reshape(()), "zero"),
             numpy_helper.from_array(rng.standard_normal((npix, dim)).astype(np.float32)
                                     / np.sqrt(npix), "w"),
             numpy_helper.from_array(rng.standard_normal((npix, 2)).astype(np.float32)
                                     / np.sqrt(npix), "v")]
    graph = helper.make_graph(
        nodes, space,
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", npix])
         for n in ("flux", "weight")],
        [helper.make_tensor_value_info("latent", TensorProto.FLOAT, ["batch", dim]),
         helper.make_tensor_value_info("level", TensorProto.FLOAT, ["batch"]),
         helper.make_tensor_value_info("colour", TensorProto.FLOAT, ["batch", 2])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    meta = {"model": "space", "space": space, "version": version,
            "grid": grid.to_json(), "frame": frame, "medium": "vacuum",
            "latent_dim": str(dim), "metric": "l2",
            "outputs": json.dumps(SPACE_OUTPUTS),
            "training_data": "none (test model)"}
    for key, value in (metadata or {}).items():
        if value is None:
            meta.pop(key, None)
        else:
            meta[key] = value
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = contract.PREFIX + key, value
    data = model.SerializeToString()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / contract.file_name(space, data)
    path.write_bytes(data)
    return path


@pytest.fixture(scope="session")
def write_space_model():
    """``write_space_model(directory, **options)``: path of a small real
    plug-in space model (see :func:`_write_space_model`)."""
    return _write_space_model


def _run_directly(path: Path, flux: np.ndarray, weight: np.ndarray) -> list:
    """Outputs of an ONNX file on one batch, with a plain CPU session."""
    import onnxruntime as ort
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"flux": flux, "weight": weight})


@pytest.fixture(scope="session")
def write_test_models():
    """``write_test_models(directory, **options)``: kind -> path of small
    real ONNX models under the contract."""
    return _write_test_models


@pytest.fixture(scope="session")
def run_directly():
    """``run_directly(path, flux, weight)``: outputs of an ONNX file."""
    return _run_directly


@pytest.fixture(scope="session")
def test_models_grid() -> Grid:
    """The grid of the test models."""
    return TEST_GRID


@pytest.fixture(scope="session")
def test_models_labels() -> list[str]:
    """The class labels of the test classifier."""
    return LABELS


# --------------------------------------------------- benchmark helpers ----

@pytest.fixture(scope="session")
def bench_tools():
    """The benchmarks' helpers (bench-schema RD, dachs runner, file maker):
    the bench scripts import their ``common`` module by name, so their
    folder joins the path here, in one place."""
    sys.path.insert(0, str(CHECKOUT / "tests" / "benchmarks"))
    import bench_ingest
    import common
    return SimpleNamespace(BENCH_RD=common.BENCH_RD, VENV_BIN=common.VENV_BIN,
                           dachs=common.dachs, write_bench_rd=common.write_bench_rd,
                           make_files=bench_ingest.make_files)


# ------------------------------------------------------- hostile input ----
# The hostile corpus (tests/hostile_corpus.py writes it at test time), the
# canary server a hostile file must never reach, and the secret it must
# never read: the readers, the pipeline and the server are tested with them.

TEMPLATES = package_dir("mangadap") / "data" / "spectral_templates"


MILES = TEMPLATES / "miles" / "MILES_res2.50_star_m0028V.fits"


class _Canary(BaseHTTPRequestHandler):
    """Records every request; a reader that fetches anything shows here."""

    seen: list = []

    def _record(self):
        self.seen.append(f"{self.command} {self.path}")
        body = b"CANARY"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_HEAD = _record

    def log_message(self, *args):
        pass


@pytest.fixture(scope="session")
def canary():
    """``(url, requests)`` of a local HTTP listener."""
    _Canary.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Canary)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", _Canary.seen
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def secret(tmp_path_factory):
    """A local file whose random token must never appear in any output."""
    path = tmp_path_factory.mktemp("secret") / "secret.txt"
    path.write_text(f"TOKEN-{secrets.token_hex(16)}\n")
    path.chmod(0o644)  # readable by the server's user: a leak would work
    return path


@pytest.fixture(scope="session")
def corpus(tmp_path_factory, canary, secret):
    directory = tmp_path_factory.mktemp("hostile")
    directory.chmod(0o755)
    return hostile_corpus.write_corpus(directory, base_fits=MILES,
                                       canary_url=canary[0], secret=secret)


@pytest.fixture
def watchdog():
    """Dump every thread's stack and exit if the test hangs."""
    faulthandler.dump_traceback_later(600, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


def _assert_no_leak(text, secret):
    """No line of /etc/passwd and not the secret token in ``text``."""
    token = secret.read_text().strip()
    assert token not in text
    lines = [line for line in Path("/etc/passwd").read_text().splitlines()
             if len(line) > 12]
    for marker in (*PASSWD_MARKERS, *lines):
        assert marker not in text, marker


def _status_bytes(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def _measured(function, *args):
    """``(outcome, seconds, peak RSS growth in bytes)`` of a call; the
    outcome is the return value or the exception raised."""
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    before = _status_bytes("VmRSS")
    start = time.perf_counter()
    try:
        outcome = function(*args)
    except Exception as exc:  # noqa: BLE001 - the caller checks the type
        outcome = exc
    seconds = time.perf_counter() - start
    return outcome, seconds, _status_bytes("VmHWM") - before


@pytest.fixture
def assert_no_leak():
    """``assert_no_leak(text, secret)``: no line of /etc/passwd and not the
    secret token in ``text``."""
    return _assert_no_leak


@pytest.fixture
def measured():
    """``measured(function, *args)``: (outcome, seconds, peak RSS growth)."""
    return _measured


