"""Small real ONNX models that follow the shipped models' contract.

Ingest tests need models whose outputs they can predict exactly; these are
linear torch modules exported to ONNX with the same metadata the shipped
models carry, so every code path of ``ingest.infer`` runs on real ONNX files.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from retrspect.ingest.preprocess import Grid

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

    return {"vae": (Vae(), ["latent_mean", "latent_logvar", "reconstruction",
                            "anomaly"]),
            "classifier": (Classifier(), ["probabilities", "uncertainty"]),
            "velocity": (Velocity(), ["redshift", "redshift_error"])}


def write_test_models(directory: Path, *, latent_dim: int = 32,
                      grid: Grid = TEST_GRID, version: str = "0.0.1",
                      metric: str = "l2", seed: int = 0,
                      kinds=("vae", "classifier", "velocity")) -> dict:
    """Export the test models into ``directory``; returns kind -> path."""
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
        for key, value in meta.items():
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
        data = model.SerializeToString()
        path = directory / f"{kind}-{hashlib.sha256(data).hexdigest()[:12]}.onnx"
        path.write_bytes(data)
        written[kind] = path
    return written


def run_directly(path: Path, flux: np.ndarray, weight: np.ndarray) -> list:
    """Outputs of an ONNX file on one batch, with a plain CPU session."""
    import onnxruntime as ort
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"flux": flux, "weight": weight})
