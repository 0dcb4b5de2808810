"""The one training loop. Teacher training, supervised students and distillation differ only
in where the views come from and whether teacher logits enter the loss (`Teacher` below)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from vwwfast import config as C
from vwwfast.errors import UserError
from vwwfast.data import SplitData
from vwwfast.evaluate import evaluate
from vwwfast.models import autocast


@torch.no_grad()
def settle_bn(model, data: SplitData, order: np.ndarray, params: np.ndarray, batch_size: int,
              images: int) -> None:
    """Recompute BatchNorm running statistics with the current weights (a cumulative average
    over `images` training views). Running averages that trail fast-moving weights otherwise
    leave short runs evaluating at the majority-class rate."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns or images <= 0:
        return
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    for x, _, _ in data.batches(order[:images], params, batch_size):
        with autocast(x.device):
            model(x.contiguous(memory_format=torch.channels_last))
    for m, momentum in zip(bns, momenta):
        m.momentum = momentum
    from vwwfast import distributed as D
    if D.active():  # every rank saw a different part: evaluate with their average
        for m in bns:
            for buf in (m.running_mean, m.running_var):
                buf.copy_(D.all_reduce_sum(buf) / D.world_size())


# ---------------------------------------------------------------------------------------
# The loop

def onecycle(optimizer, cfg, total_steps: int):
    # OneCycleLR divides by each phase's length: keep both phases at least one step long.
    total_steps = max(total_steps, 3)
    pct = min(max(cfg.pct_start, 2 / total_steps), 1 - 1 / total_steps)
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=cfg.lr, total_steps=total_steps, pct_start=pct,
        div_factor=cfg.div_factor, final_div_factor=cfg.final_div_factor)


def make_optimizer(model, cfg):
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay, nesterov=True)
    raise UserError(f"--optimizer must be 'adamw' or 'sgd', got '{cfg.optimizer}'")


def _check(cfg) -> None:
    for name in ("epochs", "batch_size", "input_size"):
        if getattr(cfg, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1")
    if cfg.lr <= 0:
        raise UserError("--lr must be positive")


def fit(cfg, kind: str, teacher=None, run=None) -> dict:
    """Train a model on cfg.shards; `teacher` (None, or a teacher.Teacher) adds the KD terms."""
    from vwwfast import distributed as D
    from vwwfast.epochs import epoch_order
    from vwwfast.losses import alpha_at, kd_loss, margin_at
    from vwwfast.models import build_model, save_checkpoint
    from vwwfast.render import resolve_device
    from vwwfast.progress import bar, info
    from vwwfast.runs import Run
    from vwwfast.shards import ShardSet
    from vwwfast.views import view_params, view_spec

    _check(cfg)
    device = D.device() if D.active() else resolve_device(cfg.device)
    shards = ShardSet.open(cfg.shards)
    for split in ("train", "val"):
        shards.require_both_classes(split)
    spec = view_spec(cfg.view_spec)
    train = SplitData(shards, "train", cfg, device, cfg.input_size)
    val = SplitData(shards, "val", cfg, device, cfg.input_size)
    if teacher is not None:
        teacher.prepare(shards, train, val, device)

    torch.manual_seed(cfg.seed)
    model = build_model(cfg.arch, bn_momentum=cfg.bn_momentum, pretrained=cfg.pretrained,
                        init=cfg.init).to(device)
    model = model.to(memory_format=torch.channels_last)  # faster on GPUs and on CPUs (oneDNN)
    optimizer = make_optimizer(model, cfg)
    steps_per_epoch = math.ceil(len(D.rank_part(np.arange(len(train)))) / cfg.batch_size)
    steps_per_epoch = D.max_int(steps_per_epoch)
    scheduler = onecycle(optimizer, cfg, cfg.epochs * steps_per_epoch)

    start_epoch, best = 0, {"val_acc": -1.0, "epoch": -1}
    if run is None and D.is_main():
        run = Run.create(cfg.runs_dir, kind, cfg)
    if cfg.resume:
        state = torch.load(Path(cfg.resume) / "last.pt", map_location="cpu", weights_only=True)
        model.load_state_dict(state["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, best = state["epoch"] + 1, state["best"]
        if D.is_main():  # drop records of an epoch that was logged but never checkpointed
            kept = [r for r in run.epochs() if r["epoch"] < start_epoch]
            (run.path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept))
    step_model = D.wrap(model)
    if cfg.compile == "on" or (cfg.compile == "auto" and device.type == "cuda"):
        step_model = torch.compile(step_model)

    wall0, images_seen, train_seconds = time.perf_counter(), 0, 0.0
    try:
        for epoch in range(start_epoch, cfg.epochs):
            torch.manual_seed(cfg.seed * 1000 + epoch)  # resume replays the same randomness
            order = D.rank_part(epoch_order(len(train), cfg.seed, epoch))
            if teacher is not None and teacher.provides_views:
                params = teacher.train_params(epoch)
            else:
                params = view_params(spec, cfg.seed, epoch, np.arange(len(train)),
                                     train.split.heights, train.split.widths)
            alpha = alpha_at(teacher.alpha, teacher.alpha_end, epoch, cfg.epochs) if teacher else 0.0
            mw = (margin_at(teacher.margin_weight, teacher.margin_weight_end,
                            teacher.margin_decay_end_epoch, epoch) if teacher else 0.0)
            temperature = teacher.temperature if teacher else 1.0
            gamma = teacher.confidence_gamma if teacher else 0.0
            loss_sums = torch.zeros(4, device=device)  # summed on the device: no sync per step
            n_batches, n_images = 0, 0
            step_model.train()
            t0 = time.perf_counter()
            with bar(f"epoch {epoch + 1}/{cfg.epochs}", len(order)) as advance, D.join(step_model):
                for x, y, idx in train.batches(order, params, cfg.batch_size):
                    z_t = teacher.logits(epoch, idx, params) if teacher else None
                    with autocast(device):
                        z_s = step_model(x.contiguous(memory_format=torch.channels_last))
                    loss, terms = kd_loss(z_s, z_t, y, alpha=alpha, temperature=temperature,
                                          confidence_gamma=gamma, margin_weight=mw,
                                          label_smoothing=cfg.label_smoothing)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    scheduler.step()
                    loss_sums += torch.stack([loss.detach(), terms["ce"], terms["kl"], terms["margin"]])
                    n_batches += 1
                    n_images += len(y)
                    advance(len(y))
            for _ in range(steps_per_epoch - n_batches):
                scheduler.step()  # ranks with a short part keep the schedule in step
            if device.type == "cuda":
                torch.cuda.synchronize()
            seconds = time.perf_counter() - t0
            counts = D.all_reduce_sum(torch.tensor([n_batches, n_images], device=device, dtype=torch.float64))
            n_images_all = int(counts[1].item())
            means = (D.all_reduce_sum(loss_sums) / max(counts[0].item(), 1)).tolist()
            sums = dict(zip(("loss", "loss_ce", "loss_kl", "loss_margin"), means))
            train_seconds += seconds
            images_seen += n_images_all
            settle_bn(model, train, order, params, cfg.batch_size, cfg.bn_settle)
            metrics = evaluate(model, val, cfg.batch_size * 2, cfg.val_center_crop)
            record = {"epoch": epoch, **sums, "alpha": alpha, "margin_weight": mw,
                      "lr": scheduler.get_last_lr()[0], "val_acc": metrics["acc"],
                      "recall_0": metrics["recall_0"], "recall_1": metrics["recall_1"],
                      "confusion": metrics["confusion"], "img_per_s": n_images_all / max(seconds, 1e-9),
                      "time_s": seconds, "views_sha256": views_digest(params)}
            if teacher is not None:
                record.update(teacher.epoch_note(epoch))
            improved = metrics["acc"] > best["val_acc"]
            if improved:
                best = {"val_acc": metrics["acc"], "epoch": epoch, **metrics}
            if D.is_main():
                run.log_epoch(record)
                ckpt_args = dict(arch=cfg.arch, input_size=cfg.input_size, config=C.to_dict(cfg),
                                 epoch=epoch, metrics=metrics)
                if improved:
                    save_checkpoint(run.path / "model.pt", model, **ckpt_args)
                save_checkpoint(run.path / "last.pt", model, **ckpt_args, extra={
                    "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "best": best})
                info(f"epoch {epoch + 1:>3}/{cfg.epochs}  loss {sums['loss']:.4f}  "
                     f"val acc {metrics['acc']:.4f}  recall {_fmt(metrics['recall_0'])}/"
                     f"{_fmt(metrics['recall_1'])}  {record['img_per_s']:,.0f} img/s")
            if cfg.patience and epoch - best["epoch"] >= cfg.patience:
                info(f"early stop: no better val accuracy for {cfg.patience} epochs")
                break
    except KeyboardInterrupt:
        if D.is_main() and run is not None:
            run.finish(_summary(best, wall0, images_seen, train_seconds, device, teacher),
                       finished=False, card_extra=teacher.card_lines() if teacher else None)
        raise
    summary = _summary(best, wall0, images_seen, train_seconds, device, teacher)
    if D.is_main():
        run.finish(summary, finished=True, card_extra=teacher.card_lines() if teacher else None)
        info(f"run {run.path}: best val acc {best['val_acc']:.4f} at epoch {best['epoch'] + 1}")
    summary["run_dir"] = str(run.path) if run is not None else None
    return summary


def views_digest(params: np.ndarray) -> str:
    """Names the training views of an epoch, so two runs can show they saw the same ones."""
    import hashlib
    return hashlib.sha256(np.ascontiguousarray(params).tobytes()).hexdigest()[:16]


def _fmt(x):
    return "-" if x is None else f"{x:.3f}"


def _summary(best, wall0, images, train_seconds, device, teacher) -> dict:
    out = {"best_val_acc": best["val_acc"], "best_epoch": best["epoch"],
           "recall_0": best.get("recall_0"), "recall_1": best.get("recall_1"),
           "confusion": best.get("confusion"), "wall_time_s": time.perf_counter() - wall0,
           "img_per_s": images / max(train_seconds, 1e-9), "device": _device_name(device)}
    if teacher is not None:
        out.update(teacher.summary())
    return out


def _device_name(device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


# ---------------------------------------------------------------------------------------
# Commands

def _resumed(cfg, cls):
    """A resumed run continues with the config it was started with."""
    from vwwfast.runs import Run
    run = Run.open(cfg.resume)
    if not (run.path / "last.pt").is_file():
        raise UserError(f"{run.path} has no last.pt to resume from")
    saved = C.load_yaml(run.path / "config.yaml")
    saved["resume"] = str(run.path)
    return C.resolve(cls, saved, {}, where=str(run.path / "config.yaml")), run


def train_teacher(cfg: C.TrainConfig) -> dict:
    run = None
    if cfg.resume:
        cfg, run = _resumed(cfg, C.TrainConfig)
    C.require(cfg, "shards")
    return fit(cfg, "teacher", teacher=None, run=run)


def distill(cfg: C.DistillConfig) -> dict:
    from vwwfast.teacher import make_teacher
    run = None
    if cfg.resume:
        cfg, run = _resumed(cfg, C.DistillConfig)
    C.require(cfg, "shards")
    return fit(cfg, "student", teacher=make_teacher(cfg), run=run)
