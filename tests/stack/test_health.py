"""``retrspect check`` against the real installation: all OK on the demo,
and a FAIL that names the problem when the models do not fit."""
from __future__ import annotations

import json
import os
import shutil
import subprocess


import sys
from pathlib import Path
from retrspect.ingest.infer import model_dir_from_environment


def check(env: dict | None = None) -> tuple[int, dict]:
    result = subprocess.run([str(Path(sys.executable).parent / "retrspect"), "check", "--json"],
                            capture_output=True, text=True, timeout=300,
                            env={**os.environ, **(env or {})})
    return result.returncode, {r["name"]: r for r in json.loads(result.stdout)}


def test_every_check_passes_on_the_demo(tap):
    code, results = check()
    assert code == 0, results
    assert list(results) == ["database", "tables", "models", "server", "replica", "knn"]
    assert all(r["ok"] for r in results.values())
    spectra = tap.search("SELECT COUNT(*) AS n FROM retrspect.spectra"
                         ).to_table()["n"][0]
    assert results["tables"]["detail"].startswith(f"{spectra} spectra")
    for path in model_dir_from_environment().glob("*.onnx"):
        kind, digest = path.stem.split("-")
        assert f"{kind}-" in results["models"]["detail"]
        assert digest in results["models"]["detail"]


def test_a_broken_model_file_fails_with_its_name(tmp_path, tap):
    for path in model_dir_from_environment().glob("*.onnx"):
        shutil.copy(path, tmp_path)
    broken = next(tmp_path.glob("velocity-*.onnx"))
    broken.write_bytes(broken.read_bytes()[:1000])
    code, results = check({"RETRSPECT_MODEL_DIR": str(tmp_path)})
    assert code == 1
    assert results["database"]["ok"] and results["knn"]["ok"]
    assert not results["models"]["ok"]
    assert broken.name in results["models"]["detail"]


def test_models_without_results_are_counted(tmp_path, tap, write_test_models):
    """Other (test) models: no spectrum has their results yet."""
    write_test_models(tmp_path)
    code, results = check({"RETRSPECT_MODEL_DIR": str(tmp_path)})
    spectra = tap.search("SELECT COUNT(*) AS n FROM retrspect.raw_data"
                         ).to_table()["n"][0]
    assert code == 1 and not results["models"]["ok"]
    assert results["models"]["detail"].startswith(
        f"{spectra} spectra have no results of the current models")
