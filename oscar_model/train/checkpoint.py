"""Resumable checkpoints written with safetensors only (no pickle anywhere).

A checkpoint folder holds ``model.safetensors`` (all trainable modules, prefixed by name),
``optim.safetensors`` (the optimiser's tensors) and ``state.json`` (step, RNG state, the
optimiser's scalar state). Files are written to a temporary name and renamed, so a session
that ends mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn


def _atomic_save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp))
    os.replace(tmp, path)


def _optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, st in sd["state"].items():
        for key, val in st.items():
            if torch.is_tensor(val):
                tensors[f"{pid}.{key}"] = val
            else:
                scalars.setdefault(str(pid), {})[key] = val
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def save_checkpoint(
    folder: str | Path,
    modules: dict[str, nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    state: dict[str, Any],
) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    weights = {f"{name}.{k}": v for name, m in modules.items() for k, v in m.state_dict().items()}
    _atomic_save_tensors(weights, folder / "model.safetensors")
    opt_meta = {}
    opt_tensors: dict[str, torch.Tensor] = {}
    for name, opt in optimizers.items():
        tensors, meta = _optimizer_tensors(opt)
        opt_tensors.update({f"{name}/{k}": v for k, v in tensors.items()})
        opt_meta[name] = meta
    if opt_tensors:
        _atomic_save_tensors(opt_tensors, folder / "optim.safetensors")
    tmp = folder / "state.json.tmp"
    tmp.write_text(json.dumps({"state": state, "optimizers": opt_meta}, indent=1))
    os.replace(tmp, folder / "state.json")


def load_checkpoint(
    folder: str | Path,
    modules: dict[str, nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
) -> dict[str, Any] | None:
    """Restores modules and optimisers in place; returns the saved state or None if absent."""
    folder = Path(folder)
    if not (folder / "state.json").exists():
        return None
    meta = json.loads((folder / "state.json").read_text())
    weights = load_file(str(folder / "model.safetensors"))
    for name, m in modules.items():
        prefix = f"{name}."
        m.load_state_dict({k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)})
    opt_tensors = load_file(str(folder / "optim.safetensors")) if optimizers else {}
    for name, opt in optimizers.items():
        om = meta["optimizers"][name]
        state: dict[int, dict[str, Any]] = {}
        for key, val in opt_tensors.items():
            oname, rest = key.split("/", 1)
            if oname != name:
                continue
            pid, sname = rest.split(".", 1)
            state.setdefault(int(pid), {})[sname] = val
        for pid, sc in om["scalars"].items():
            state.setdefault(int(pid), {}).update(sc)
        opt.load_state_dict({"state": state, "param_groups": om["param_groups"]})
    return meta["state"]
