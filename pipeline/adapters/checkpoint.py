"""Policy checkpoints: the weights, the optimiser, the epoch reached and the config that
made them, in one file, written atomically so a crash never leaves half a checkpoint.

A checkpoint holds only tensors and plain Python values (the config as YAML text, the
metrics as floats): it is read with ``torch.load(weights_only=True)``, which runs no code
from the file (a checkpoint may come from the model registry)."""
from __future__ import annotations

import os
from pathlib import Path

import torch
from pipeline.config import Config, from_yaml, to_yaml
from pipeline.core.policy import OrderPolicy, build_policy
from pipeline.core.problems import get_problem

FILE = "checkpoint.pt"


def best_path(run_dir: Path) -> Path:
    """The checkpoint a run keeps as its policy: its best validation epoch so far, or with
    ``train.keep=last`` its latest epoch."""
    return Path(run_dir) / "checkpoints" / "best" / FILE


def latest_path(run_dir: Path) -> Path:
    """The checkpoint of a run's latest epoch (what a restarted run resumes from)."""
    return Path(run_dir) / "checkpoints" / "latest" / FILE


def save(path: Path, policy: torch.nn.Module, optimizer, epoch: int, cfg: Config,
         state_width: int, metrics: dict | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"policy": policy.state_dict(),
                "optimizer": optimizer.state_dict() if optimizer is not None else None,
                "epoch": epoch, "config": to_yaml(cfg), "state_width": state_width,
                "metrics": {k: plain(v) for k, v in (metrics or {}).items()}}, tmp)
    os.replace(tmp, path)
    return path


def plain(value):
    """A numpy or torch scalar as the Python number it holds (what ``weights_only`` loads)."""
    return value.item() if hasattr(value, "item") and getattr(value, "ndim", 0) == 0 else value


def load(path: Path) -> dict:
    """A checkpoint's contents, unpickling tensors and plain values only: a file that holds
    anything else (an object whose unpickling could run code) raises
    ``pickle.UnpicklingError``."""
    return torch.load(path, map_location="cpu", weights_only=True)


def load_policy(path: Path) -> tuple[OrderPolicy, Config, dict]:
    """Rebuild the policy a checkpoint holds, with the config it was trained with."""
    state = load(path)
    cfg = from_yaml(state["config"])
    problem = get_problem(cfg.problem.name, cfg.problem.params)
    policy = build_policy(cfg.policy, state["state_width"], problem)
    policy.load_state_dict(state["policy"])
    policy.eval()
    return policy, cfg, state
