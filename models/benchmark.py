"""ONNX Runtime against eager torch on CPU, in one run, written to a file.

For each shipped model: the same batch of 256 prepared real spectra, the
same thread count (2), torch in ``inference_mode``, ONNX Runtime with all
graph optimisations; the median of several timed repetitions after warm-up.
The ratio torch / ONNX is the speed-up.  The sum over the models is the
per-spectrum inference cost ingest pays.

Both runtimes can let their idle threads spin (busy-wait) at every
barrier.  That is faster on an idle machine and many times slower when the
cores are shared (as at ingest, beside DaCHS and the other workers), and it
moves the ratio: :func:`compare` therefore times each model in both
:data:`CONFIGURATIONS`, each in a fresh process (torch reads
``OMP_WAIT_POLICY`` once, at start).  The result also records the CPU time
other processes used while the timings ran (``other_processes_cores``) and
the load average, so a run on a busy machine can be recognised.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _median_time(fn, repeats, warmup=2):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times)), times


def _cpu_sample():
    """(busy jiffies of the machine, jiffies of this process, wall time)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        with open("/proc/self/stat") as f:
            own = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return sum(fields) - fields[3] - fields[4], int(own[11]) + int(own[12]), time.time()


def _other_cores(start, end):
    """Cores other processes kept busy between two samples (None if unknown)."""
    if start is None or end is None:
        return None
    hz = os.sysconf("SC_CLK_TCK")
    return ((end[0] - start[0]) - (end[1] - start[1])) / hz / max(end[2] - start[2], 1e-3)


def benchmark(models, flux, weight, *, threads=2, repeats=15, out=None, spinning=True):
    """Time each (name, torch module, onnx path) on one batch.

    Parameters
    ----------
    models : list of (name, torch.nn.Module, path)
    flux, weight : ndarray (batch, npix)
    threads : int
    repeats : int
    out : path, optional
        JSON file to write.

    Returns
    -------
    dict
    """
    import onnxruntime as ort
    import torch

    torch.set_num_threads(threads)
    batch = len(flux)
    result = {"batch": batch, "threads": threads, "repeats": repeats,
              "torch": torch.__version__, "onnxruntime": ort.__version__,
              "machine": platform.processor() or platform.machine(),
              "models": {}}
    total_onnx = total_torch = 0.0
    tf, tw = torch.as_tensor(flux), torch.as_tensor(weight)
    feed = {"flux": np.asarray(flux, np.float32), "weight": np.asarray(weight, np.float32)}
    for name, module, path in models:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        if not spinning:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        module.eval()

        def run_torch():
            with torch.inference_mode():
                module(tf, tw)

        # interleave the two so that load from other processes hits both alike
        t_onnx, t_torch = [], []
        sample = _cpu_sample()
        for _ in range(3):
            t_onnx.append(_median_time(lambda: session.run(None, feed), repeats // 3)[0])
            t_torch.append(_median_time(run_torch, repeats // 3)[0])
        others = _other_cores(sample, _cpu_sample())
        onnx_s, torch_s = float(np.median(t_onnx)), float(np.median(t_torch))
        total_onnx += onnx_s
        total_torch += torch_s
        result["models"][name] = {
            "file": Path(path).name,
            "onnx_ms_per_batch": 1e3 * onnx_s,
            "torch_ms_per_batch": 1e3 * torch_s,
            "onnx_ms_per_spectrum": 1e3 * onnx_s / batch,
            "torch_ms_per_spectrum": 1e3 * torch_s / batch,
            "speedup_torch_over_onnx": torch_s / onnx_s,
            "other_processes_cores": None if others is None else round(others, 2),
        }
    result["all_models"] = {
        "onnx_ms_per_spectrum": 1e3 * total_onnx / batch,
        "torch_ms_per_spectrum": 1e3 * total_torch / batch,
        "speedup_torch_over_onnx": total_torch / total_onnx,
        "budget_ms_per_spectrum": 0.5,
    }
    if hasattr(os, "getloadavg"):
        result["load_average"] = [round(v, 2) for v in os.getloadavg()]
    result["omp_wait_policy"] = os.environ.get("OMP_WAIT_POLICY", "")
    if out:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1) + "\n")
    return result


#: The two ways to run both runtimes: the configuration ingest uses is the
#: headline figure.
CONFIGURATIONS = {
    "not_spinning": {
        "omp_wait_policy": "PASSIVE", "spinning": False,
        "meaning": "as ingest runs: ONNX Runtime's threads do not spin (they share the "
                   "cores with DaCHS and other workers) and torch's OpenMP threads sleep "
                   "at barriers (OMP_WAIT_POLICY=PASSIVE)"},
    "spinning": {
        # not ACTIVE: torch's threads would then spin on through the ONNX
        # Runtime timings in the same process and take its cores
        "omp_wait_policy": None, "spinning": True,
        "meaning": "both runtimes' defaults on an idle machine: waiting threads spin "
                   "(OpenMP's default: for a while, then sleep)"},
}
HEADLINE = "not_spinning"


def compare(workdir, files, flux, weight, *, threads=2, out=None):
    """Time every model in each of :data:`CONFIGURATIONS` (a fresh process
    each) and write one file; the headline configuration's figures are also
    at the top level.

    Parameters
    ----------
    workdir : path
        Checkpoints (``<name>.pt``) of the torch models.
    files : dict name -> path of the shipped ONNX file
    flux, weight : ndarray (batch, npix)
    """
    package_root = str(Path(__file__).resolve().parents[1])
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        batch = Path(tmp) / "batch.npz"
        np.savez(batch, flux=flux, weight=weight)
        for name, config in CONFIGURATIONS.items():
            target = Path(tmp) / f"{name}.json"
            env = dict(os.environ, PYTHONPATH=os.pathsep.join(
                [package_root] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
            env.pop("OMP_WAIT_POLICY", None)
            if config["omp_wait_policy"]:
                env["OMP_WAIT_POLICY"] = config["omp_wait_policy"]
            command = [sys.executable, "-m", "retrspect.models.benchmark", "--workdir", str(workdir),
                       "--batch", str(batch), "--threads", str(threads), "--out", str(target),
                       "--spinning" if config["spinning"] else "--no-spinning"]
            command += [f"{k}={v}" for k, v in files.items()]
            subprocess.run(command, env=env, check=True)
            results[name] = dict(json.loads(target.read_text()), meaning=config["meaning"])
    combined = dict(results[HEADLINE])
    combined["headline"] = HEADLINE
    combined["configurations"] = results
    if out:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(combined, indent=1) + "\n")
    return combined


def main(argv=None):
    """One configuration in this process (called by :func:`compare`)."""
    import argparse

    import torch

    from retrspect.models.train import load_checkpoint
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--batch", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--spinning", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("models", nargs="+", help="name=path.onnx")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    arrays = np.load(args.batch)
    models = []
    for spec in args.models:
        name, path = spec.split("=", 1)
        models.append((name, load_checkpoint(args.workdir / f"{name}.pt")["model"], path))
    result = benchmark(models, arrays["flux"], arrays["weight"], threads=args.threads,
                       spinning=args.spinning)
    result["spinning"] = args.spinning
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
