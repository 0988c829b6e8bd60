"""Replacing a plug-in space's model re-embeds that space alone, in one
transaction (issue 14).  Run on the bench schema (retrspect_bench, the
demo's own RD) with small test models, so the demo's tables are never at
risk: a space's re-embedding is killed with SIGKILL mid-way, then run to
the end, and the generic space's results are compared before and after."""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

N_FILES = 1200   # the files the other bench tests use (made once, cached)
STORE = "retrspect_bench.space_tiny_all"


@pytest.fixture(scope="module")
def space_sets(write_test_models, write_space_model):
    """v1: the test models and the space tiny 1.0.0; v2: the same built-in
    files and tiny 2.0.0 (another model of the same shape)."""
    root = Path("/var/tmp/retrspect-bench/space-models")
    subprocess.run(["rm", "-rf", str(root)], check=True)
    builtin = write_test_models(root / "v1", version="1.0.0", seed=1)
    write_space_model(root / "v1", version="1.0.0", seed=1)
    (root / "v2").mkdir()
    for path in builtin.values():
        shutil.copy(path, root / "v2")
    write_space_model(root / "v2", version="2.0.0", seed=2)
    subprocess.run(["chmod", "-R", "a+rX", str(root.parent)], check=True)
    return {"v1": root / "v1", "v2": root / "v2"}


@pytest.fixture(scope="module")
def bench(space_sets, bench_tools):
    def drop():
        # the RD declares the space tiny only when it sees its model
        bench_tools.dachs("drop", bench_tools.BENCH_RD, check=False,
                          env={"RETRSPECT_MODEL_DIR": str(space_sets["v1"])})
    bench_tools.write_bench_rd(bench_tools.make_files(N_FILES))
    drop()
    yield bench_tools
    drop()


def _env(bench, model_dir: Path) -> dict:
    return {"RETRSPECT_MODEL_DIR": str(model_dir)}


def _generic_state(psql) -> str:
    """A digest of every ml_results row (models and latents)."""
    return psql("SELECT md5(string_agg(pubdid || latent_model || class_model "
                "|| velocity_model || coalesce(latent::text, 'null'), ',' "
                "ORDER BY pubdid)) FROM retrspect_bench.ml_results")


def _space_state(psql) -> tuple[str, str, str]:
    """(rows, models, digest of the vectors) of the space tiny."""
    return (psql(f"SELECT count(*) FROM {STORE}"),
            psql(f"SELECT string_agg(DISTINCT model, ',') FROM {STORE}"),
            psql(f"SELECT md5(string_agg(pubdid || coalesce(latent::text, 'null'),"
                 f" ',' ORDER BY pubdid)) FROM {STORE}"))


def _kill_mid_run(bench, model_dir: Path, data: str, after_files: int) -> None:
    """Run ``dachs imp <bench RD> <data>`` and SIGKILL it once its progress
    bar shows ``after_files`` files read (rows are being written then)."""
    env = dict(os.environ, PATH=f"{bench.VENV_BIN}:{os.environ['PATH']}",
               RETRSPECT_MODEL_DIR=str(model_dir))
    process = subprocess.Popen(
        ["runuser", "-u", "dachsroot", "--", str(bench.VENV_BIN / "dachs"),
         "imp", bench.BENCH_RD, data], env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, start_new_session=True)
    seen, deadline = b"", time.monotonic() + 300
    try:
        while time.monotonic() < deadline:
            chunk = process.stderr.read1(4096)
            if not chunk:
                break
            seen += chunk
            done = [int(n) for n in re.findall(rb"(\d+)/%d" % N_FILES, seen)]
            if done and max(done) >= after_files:
                break
        assert process.poll() is None, "the re-embedding ended before the kill"
        assert done and max(done) < N_FILES
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def test_replacing_a_space_model_re_embeds_that_space_alone_atomically(
        bench, space_sets, psql):
    bench.dachs("imp", bench.BENCH_RD, env=_env(bench, space_sets["v1"]))
    rows, models, vectors = _space_state(psql)
    assert int(rows) == N_FILES and models.startswith("tiny-1.0.0-")
    generic = _generic_state(psql)

    # killed half-way through: the space keeps every old vector
    _kill_mid_run(bench, space_sets["v2"], "reembed_tiny", after_files=256)
    assert _space_state(psql) == (rows, models, vectors)

    # to the end: every vector is the new model's; generic is untouched
    bench.dachs("imp", bench.BENCH_RD, "reembed_tiny", "view_tiny",
                env=_env(bench, space_sets["v2"]))
    new_rows, new_models, new_vectors = _space_state(psql)
    assert int(new_rows) == N_FILES and new_models.startswith("tiny-2.0.0-")
    assert new_vectors != vectors
    assert _generic_state(psql) == generic
    # the TAP table shows the covered ones
    assert psql("SELECT count(*) FROM retrspect_bench.space_tiny") == psql(
        f"SELECT count(*) FROM {STORE} WHERE grid_coverage >= 0.5")
