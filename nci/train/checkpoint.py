"""``OUT/checkpoint/``: the last state (``last/``: weights, optimizer, every rank's RNG state and
``state.json``), written atomically every epoch and on SIGINT/SIGTERM, and the best epoch's
weights (``best.safetensors``). Tensors go to safetensors, the rest to JSON: nothing is pickled."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from nci.manifest import ArtifactError, write_json_atomic
from nci.model import NCIModel
from nci.train.config import PER_INVOCATION, RUN_CONTROL, TrainConfig
from nci.train.ddp import Dist, gather

log = logging.getLogger("nci.train")

CHECKPOINT_VERSION = 1


def trainable_state(model: NCIModel) -> dict[str, torch.Tensor]:
    """The decoder and any trainable encoder weights (the frozen encoder comes from its source)."""
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    return {
        n: t.detach().to("cpu").contiguous()
        for n, t in model.state_dict().items()
        if not n.startswith("encoder.") or n in trainable
    }


def state_digest(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(state):
        h.update(name.encode())
        h.update(state[name].float().numpy().tobytes())
    return h.hexdigest()


def save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))
    os.replace(tmp, path)


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def optimizer_to_files(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer's state into tensors (for safetensors) and JSON."""
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, state in sd["state"].items():
        for name, value in state.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{name}"] = value.detach().to("cpu")
            else:
                scalars[f"{index}.{name}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_files(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in list(tensors.items()) + list(meta["scalars"].items()):
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(
    out: Path,
    model: NCIModel,
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
    rng: dict[str, torch.Tensor],
) -> None:
    """Write ``checkpoint/last/`` (weights, optimizer, RNG states, state.json) atomically."""
    root = out / "checkpoint"
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / ".last.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_tensors(trainable_state(model), tmp / "weights.safetensors")
    opt_tensors, opt_meta = optimizer_to_files(optimizer)
    save_tensors(opt_tensors, tmp / "optimizer.safetensors")
    save_tensors(rng, tmp / "rng.safetensors")
    write_json_atomic(tmp / "state.json", {**state, "optimizer": opt_meta})
    last = root / "last"
    if last.exists():
        old = root / ".last.old"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(last, old)
        os.replace(tmp, last)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, last)


def read_resume_state(
    checkpoint: Path, cfg: TrainConfig, explicit: set[str]
) -> tuple[TrainConfig, dict[str, Any]]:
    """``checkpoint/last``'s state.json and the config to resume with: the checkpoint's, with the
    run-control fields named in ``explicit`` (and the per-invocation ones) taken from ``cfg``.
    Any other field in ``explicit`` must agree with the checkpoint."""
    if not (checkpoint / "state.json").is_file():
        raise ArtifactError(f"{checkpoint}: no checkpoint to resume from; start without --resume")
    state = json.loads((checkpoint / "state.json").read_text())
    state["config"].setdefault("length_buckets", False)  # checkpoints from before bucketing
    saved = TrainConfig(**state["config"])
    for name in sorted(explicit - set(RUN_CONTROL)):
        if getattr(cfg, name) != getattr(saved, name):
            raise ValueError(
                f"--resume: {name} is {getattr(saved, name)!r} in the checkpoint, "
                f"{getattr(cfg, name)!r} now; "
                "only --epochs, --max-minutes, --max-steps and --device may change"
            )
    keep = {n: getattr(cfg, n) for n in RUN_CONTROL if n in explicit or n in PER_INVOCATION}
    return dataclasses.replace(saved, **keep), state


def rng_snapshot(dist: Dist, device: torch.device) -> dict[str, torch.Tensor]:
    """Every rank's torch RNG state (dropout), gathered on all ranks."""
    mine = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        mine["cuda"] = torch.cuda.get_rng_state(device)
    states = gather(dist, {k: v.numpy() for k, v in mine.items()})
    return {f"{k}_rank{r}": torch.from_numpy(v) for r, s in enumerate(states) for k, v in s.items()}


def restore_rng(rng: dict[str, torch.Tensor], dist: Dist, device: torch.device) -> None:
    key = f"cpu_rank{dist.rank}"
    if key not in rng:
        log.warning(
            "the checkpoint has no RNG state for rank %d (other world size); dropout reseeded", dist.rank
        )
        return
    torch.set_rng_state(rng[key])
    if device.type == "cuda" and f"cuda_rank{dist.rank}" in rng:
        torch.cuda.set_rng_state(rng[f"cuda_rank{dist.rank}"], device)
