"""One student of a training pass: its model, optimizer, schedule, random state, record,
best result and early-stop state. The loop (loop.py) renders each batch once and calls
`step` on every student; a lone run is a pass with one student.

Every student keeps its own random state (dropout), swapped in around its step, so a
student of a sweep makes exactly the same updates as a lone run with its settings (on the
CPU; on CUDA a compiled step leaves the random stream to the compiler).
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch

from vwwfast import distributed as D
from vwwfast.devices import autocast
from vwwfast.errors import UserError
from vwwfast.interrupts import interrupt_point
from vwwfast.models import build_model, save_checkpoint
from vwwfast.records.predictions import FILE as PREDICTIONS
from vwwfast.records.predictions import write_predictions
from vwwfast.records.selection import append_epoch
from vwwfast.train.evaluate import OUTPUTS
from vwwfast.train.losses import KDRecipe


def onecycle(optimizer, cfg, total_steps: int, max_lr: float | None = None):
    # OneCycleLR divides by each phase's length: keep both phases at least one step long.
    total_steps = max(total_steps, 3)
    pct = min(max(cfg.pct_start, 2 / total_steps), 1 - 1 / total_steps)
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=cfg.lr if max_lr is None else max_lr, total_steps=total_steps,
        pct_start=pct, div_factor=cfg.div_factor, final_div_factor=cfg.final_div_factor)


def scaled_lr(cfg) -> float:
    """--lr at --lr-base-batch, scaled to --batch-size by --lr-scaling (OneCycle's warm-up,
    --pct-start, is what keeps a large scaled peak stable)."""
    ratio = cfg.batch_size / cfg.lr_base_batch
    return cfg.lr * {"off": 1.0, "linear": ratio, "sqrt": math.sqrt(ratio)}[cfg.lr_scaling]


def make_optimizer(model, cfg, lr: float, device: torch.device):
    # fused kernels on CUDA (one launch for every tensor); foreach on the CPU (~10% faster)
    impl: dict[str, Any] = {"fused": True} if device.type == "cuda" else {"foreach": True}
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=cfg.weight_decay, **impl)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay, nesterov=True, **impl)
    raise UserError(f"--optimizer must be 'adamw' or 'sgd', got '{cfg.optimizer}'")


def compile_wanted(setting: str, device: torch.device) -> bool:
    return setting == "on" or (setting == "auto" and device.type == "cuda")


def _rng_state(device):
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def _set_rng_state(state, device):
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


def load_last(run) -> dict:
    """The last.pt of `run`: what a resume continues from."""
    path = run.path / "last.pt"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state["epoch"], state["state_dict"]  # noqa: B018 (a checkpoint has both)
    except FileNotFoundError:
        done = run.summary.get("epochs_done")
        raise UserError(f"{run.path} has no last.pt to resume from although {done} epoch"
                        f"{'s' if done != 1 else ''} ended; start a new run") from None
    except Exception as e:
        raise UserError(f"{path} is not a checkpoint ({type(e).__name__}); the run cannot be "
                        f"resumed, start a new one") from None
    return state


class Student:
    def __init__(self, cfg, kind: str, device: torch.device, steps_per_epoch: int, run=None,
                 label: str = ""):
        self.cfg, self.kind, self.device, self.run, self.label = cfg, kind, device, run, label
        self.recipe = KDRecipe.of_config(cfg)
        self.init_seed = cfg.seed if cfg.init_seed is None else cfg.init_seed
        torch.manual_seed(self.init_seed)
        self.model = build_model(cfg.arch, bn_momentum=cfg.bn_momentum, pretrained=cfg.pretrained,
                                 init=cfg.init, width=cfg.width).to(device)
        self.model = self.model.to(memory_format=torch.channels_last)  # faster on GPUs and CPUs (oneDNN)
        self.lr = scaled_lr(cfg)
        self.optimizer = make_optimizer(self.model, cfg, self.lr, device)
        self.steps_per_epoch = steps_per_epoch
        self.scheduler = onecycle(self.optimizer, cfg, cfg.epochs * steps_per_epoch, self.lr)
        self.step_model = D.wrap(self.model)
        self.compiled = compile_wanted(cfg.compile, device)
        self.forward_loss = self._forward_loss
        # The weights of the first epoch: a compiled step reads their constant part from this
        # one object for the whole run (so its guards hold) and the scheduled ones as tensors.
        self.constant_weights = self.recipe.at(1, cfg.epochs)
        if self.compiled:
            # CUDA graphs on the GPU: a MobileNetV3-Small step at 96 px is bound by kernel
            # launches. "reduce-overhead" rather than "max-autotune": minutes less compilation.
            mode = "reduce-overhead" if device.type == "cuda" else None
            self.forward_loss = torch.compile(self._forward_loss, mode=mode, dynamic=False)
        # The epoch being trained (begin_epoch)
        self.weights: dict = self.constant_weights    # every setting, weights in force
        self.scheduled: dict[str, torch.Tensor] = {}   # compiled: the scheduled weights as tensors
        self.rng = None                                # the random state between steps
        self.sums = torch.zeros(1 + len(self.recipe.terms), device=device)  # loss, each term's mean
        self.steps = 0                                 # optimizer steps this epoch
        # The run
        self.optimizer_steps = 0           # since the run began (kept in last.pt)
        self.start_epoch = 1               # the first epoch this process trains
        self.wall_before = 0.0             # wall time of the run before this process (a resume)
        self.best = {"val_acc": -1.0, "epoch": 0}
        self.status = "running"            # -> finished | failed | pruned (interrupted: the loop's)
        self.error: str | None = None
        self.pruned: dict | None = None    # a tune's race stopped it: at which rung, why
        self.stopped_early = False
        self.compile_s = 0.0
        self.train_s = 0.0
        self.images = 0

    @property
    def active(self) -> bool:
        return self.status == "running"

    # -- one epoch ------------------------------------------------------------------
    def begin_epoch(self, epoch: int) -> None:
        self.weights = self.recipe.at(epoch, self.cfg.epochs)
        # The random state of an epoch is a function of (init seed, epoch): a resume replays it.
        torch.manual_seed(self.init_seed * 1000 + epoch)
        self.rng = _rng_state(self.device)
        if self.compiled:  # scheduled weights enter as tensors: a new value is not a recompile
            self.scheduled = {k: torch.tensor(self.weights[k], device=self.device)
                              for k in self.recipe.scheduled}
        self.sums = torch.zeros(1 + len(self.recipe.terms), device=self.device)  # no sync per step
        self.steps = 0
        self.step_model.train()

    def _forward_loss(self, x, y, z_t, scheduled):
        with autocast(self.device):
            z_s = self.step_model(x)
        # Compiled: the run's constant weights with this epoch's scheduled ones as tensors.
        # Eager: this epoch's weights.
        w = self.weights if scheduled is None else {**self.constant_weights, **scheduled}
        return self.recipe.loss(z_s, z_t, y, w)

    def step(self, x: torch.Tensor, y: torch.Tensor, z_t: torch.Tensor | None) -> None:
        _set_rng_state(self.rng, self.device)
        first = self.compiled and self.steps == 0 and self.compile_s == 0.0
        t0 = time.perf_counter() if first else 0.0
        loss, means = self.forward_loss(x, y, z_t, self.scheduled if self.compiled else None)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        self.sums += torch.stack([loss.detach(), *means.values()])
        self.steps += 1
        self.optimizer_steps += 1
        self.rng = _rng_state(self.device)
        if first:  # the first compiled step is mostly compilation: reported apart
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.compile_s = time.perf_counter() - t0

    def epoch_losses(self) -> dict:
        """The epoch's loss record (KDRecipe.record): mean loss and terms over every rank's
        steps (one sync per epoch), and the weights in force."""
        total = D.all_reduce_sum(torch.cat([self.sums, torch.tensor(
            [float(self.steps)], device=self.device)]))
        means = (total[:-1] / max(total[-1].item(), 1)).tolist()
        names = [t.name for t in self.recipe.terms]
        return self.recipe.record(means[0], dict(zip(names, means[1:])), self.weights)

    def end_epoch(self, epoch: int, record: dict, metrics: dict,
                  holdout: dict | None = None) -> bool:
        """Keep the epoch's record, checkpoints and best; True when this epoch improved.
        A loss that is not finite fails this student (the others go on). metrics may hold
        per-sample outputs (evaluate_many(outputs=True)): kept as predictions.csv beside
        model.pt, never in the record. holdout: the metrics (with outputs) on the --holdout
        samples, on which the best epoch and early stopping are then decided (val is only
        reported); its predictions are kept every epoch (records/selection.py)."""
        outputs = {k: metrics[k] for k in OUTPUTS if k in metrics}
        metrics = {k: v for k, v in metrics.items() if k not in OUTPUTS}
        if not math.isfinite(record["loss"]):
            self.status = "failed"
            self.error = (f"the training loss became {record['loss']} in epoch {epoch} "
                          f"(lower --lr, or check the inputs)")
        chosen_on = metrics if holdout is None else holdout
        score = chosen_on["acc"]
        improved = self.status == "running" and score is not None and score > self.best_score()
        if improved:
            self.best = {"val_acc": metrics["acc"], "epoch": epoch, **metrics,
                         "selection_acc": score}
        if self.run is not None:
            self.run.log_epoch(record)
            if holdout is not None:
                append_epoch(self.run.path, "holdout", epoch, holdout["indices"],
                             holdout["labels"], holdout["preds"])
            interrupt_point("epoch-logged")
            if self.status == "running":
                self._save(epoch, metrics, improved, outputs)
        if self.status == "running" and self.cfg.patience and \
                epoch - self.best["epoch"] >= self.cfg.patience:
            self.stopped_early = True
            self.status = "finished"
        if self.status == "running" and epoch >= self.cfg.epochs:
            self.status = "finished"
        return improved

    def prune(self, decision: dict) -> None:
        """A tune's race stops this student (its checkpoints stay as the last epoch left them)."""
        if self.status == "running":
            self.status, self.pruned = "pruned", decision

    def best_score(self) -> float:
        """The best epoch's accuracy on the split that chooses (a last.pt written before
        holdouts existed chose on val)."""
        return self.best.get("selection_acc", self.best["val_acc"])

    # -- checkpoints ----------------------------------------------------------------
    def _save(self, epoch: int, metrics: dict, improved: bool, outputs: dict) -> None:
        from vwwfast.config import to_dict
        args = dict(arch=self.cfg.arch, width=self.cfg.width, input_size=self.cfg.input_size,
                    config=to_dict(self.cfg),
                    epoch=epoch, metrics=metrics, role=self.kind, run=self.run.id)
        if improved:
            # the val predictions of model.pt: the old ones go first, so a crash in between
            # leaves none rather than those of another checkpoint
            (self.run.path / PREDICTIONS).unlink(missing_ok=True)
            save_checkpoint(self.run.path / "model.pt", self.model, **args)
            if outputs:
                write_predictions(self.run.path / PREDICTIONS, outputs["indices"], outputs["labels"],
                                  outputs["prob_person"], outputs["preds"])
        save_checkpoint(self.run.path / "last.pt", self.model, **args, extra={
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "best": self.best, "stopped_early": self.stopped_early,
            "optimizer_steps": self.optimizer_steps})

    def resume(self, state: dict, wall_before: float) -> None:
        """Continue after the epoch that `state` (a last.pt, `load_last`) saved; wall_before:
        the run's wall time so far."""
        have = float(state.get("width") or 1.0)
        if have != self.cfg.width:
            raise UserError(f"cannot resume: {self.run.path if self.run else 'the run'}/last.pt holds "
                            f"a {self.cfg.arch} of width {have:g}, its config.yaml says width "
                            f"{self.cfg.width:g}; start a new run")
        self.model.load_state_dict(state["state_dict"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.best = state["best"]
        self.start_epoch = state["epoch"] + 1
        # a last.pt written before the counter was kept: the scheduler counts the same steps
        self.optimizer_steps = int(state.get("optimizer_steps", self.scheduler.last_epoch))
        self.wall_before = wall_before

    def summary(self) -> dict:
        best = self.best if self.best["epoch"] else {}
        holdout = self.cfg.holdout is not None
        return {"best_val_acc": best.get("val_acc"), "best_epoch": best.get("epoch"),
                # the split that chose best_epoch (and early stopping): val's figure is
                # optimistic when val chose it
                "selected_on": "holdout" if holdout else "val",
                "best_holdout_acc": best.get("selection_acc") if holdout else None,
                "recall_0": best.get("recall_0"), "recall_1": best.get("recall_1"),
                "confusion": best.get("confusion"), "stopped_early": self.stopped_early,
                "img_per_s": self.images / max(self.train_s, 1e-9) if self.images else None,
                "compile_s": self.compile_s, "lr_peak": self.lr,
                **({"pruned": self.pruned} if self.pruned else {})}


def views_digest(params: np.ndarray) -> str:
    """Names the training views of an epoch, so two runs can show they saw the same ones."""
    import hashlib
    return hashlib.sha256(np.ascontiguousarray(params).tobytes()).hexdigest()[:16]
