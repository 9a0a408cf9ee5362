"""A small CNN digit classifier, trained here, used to judge generated digits.

Its penultimate features (128-d) feed the Fréchet distance (Heusel et al. 2017, the FID recipe with
our own feature extractor instead of Inception), its predictions the class histogram.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..core.checkpoint import load_weights, save_weights, write_history, write_json
from ..core.training import load_resume, save_resume
from ..data import mnist

FEATURE_DIM = 128


class DigitClassifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features_net = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),    # (B, 32, 28, 28)
            nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.MaxPool2d(2),                                                  # (B, 32, 14, 14)
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
            nn.Conv2d(64, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
            nn.MaxPool2d(2),                                                  # (B, 64, 7, 7)
            nn.Flatten(),
            nn.Dropout(0.3),
            nn.Linear(64 * 7 * 7, FEATURE_DIM), nn.ReLU(),                    # (B, 128)
        )
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(FEATURE_DIM, 10))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features_net(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@torch.no_grad()
def accuracy(model: DigitClassifier, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    pred = torch.cat([model(x[i:i + 500]).argmax(1) for i in range(0, len(x), 500)])
    return float((pred == y).float().mean())


def train_classifier(out_dir: Path, epochs: int = 40, seed: int = 0, lr: float = 2e-3,
                     batch_size: int = 128, progress: bool = True, resume: bool = True) -> dict:
    """Train on the 3,600 training digits with augmentation; keep the best validation accuracy.
    Resumable from ``runs/classifier/last.pt`` beside the checkpoints root."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    tr, va = mnist.digits("train"), mnist.digits("val")
    model = DigitClassifier()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * math.ceil(len(tr) / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    best, best_state, history, elapsed, start = -1.0, None, [], 0.0, 0
    resume_path = out_dir.parent.parent / "runs" / "classifier" / "last.pt"
    st = load_resume(resume_path) if resume else None
    if st is not None:
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        sched.load_state_dict(st["sched"])
        gen.set_state(st["gen"])
        torch.set_rng_state(st["torch_rng"])
        best, best_state, history, elapsed, start = st["best"], st["best_state"], st["history"], st["elapsed"], st["epoch"]
    bar = tqdm(range(start, epochs), initial=start, total=epochs, desc="classifier", disable=not progress,
               dynamic_ncols=True)
    for epoch in bar:
        t_start = time.perf_counter() - elapsed
        model.train()
        perm = torch.randperm(len(tr), generator=gen)
        total = 0.0
        for i in range(0, len(perm), batch_size):
            idx = perm[i:i + batch_size]
            xb = mnist.random_affine(tr.x[idx], gen, elastic=1.5)
            loss = F.cross_entropy(model(xb), tr.y[idx], label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        acc = accuracy(model, va.x, va.y)
        history.append({"epoch": epoch + 1, "train_loss": total / len(tr), "val_accuracy": acc,
                        "seconds": time.perf_counter() - t_start})
        if acc >= best:
            best, best_state = acc, {k: v.detach().clone() for k, v in model.state_dict().items()}
        elapsed = time.perf_counter() - t_start
        bar.set_postfix(loss=f"{total / len(tr):.3f}", val_acc=f"{acc:.4f}")
        save_resume(resume_path, model=model.state_dict(), opt=opt.state_dict(), sched=sched.state_dict(),
                    gen=gen.get_state(), torch_rng=torch.get_rng_state(), best=best, best_state=best_state,
                    history=history, elapsed=elapsed, epoch=epoch + 1)
    assert best_state is not None
    save_weights(out_dir, best_state)
    write_history(out_dir / "history.csv", history)
    record = {"name": "classifier", "epochs": epochs, "best_val_accuracy": best, "seed": seed,
              "wall_seconds": round(elapsed, 1), "torch_threads": torch.get_num_threads()}
    write_json(out_dir / "training.json", record)
    write_json(out_dir / "config.json", {"kind": "digit_classifier", "feature_dim": FEATURE_DIM,
                                         "train": {"epochs": epochs, "seed": seed, "lr": lr, "batch_size": batch_size}})
    return record


def load_classifier(folder: Path, device: str | torch.device = "cpu") -> DigitClassifier:
    model = DigitClassifier()
    model.load_state_dict(load_weights(folder))
    return model.to(device).eval()
