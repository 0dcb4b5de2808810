"""TensorBoard event files beside a run's metrics.jsonl (the optional extra
`vwwfast[tensorboard]`): the same scalars, step = epoch."""

from __future__ import annotations

GROUPS = {"loss": "loss", "loss_ce": "loss", "loss_kl": "loss", "loss_margin": "loss",
          "term_ce": "loss_terms", "term_kl": "loss_terms", "term_margin": "loss_terms",
          "val_acc": "val", "recall_0": "val", "recall_1": "val",
          "alpha": "schedule", "margin_weight": "schedule", "temperature": "schedule",
          "lr": "schedule", "img_per_s": "speed", "time_s": "speed"}


def writer(path, first_epoch: int = 1):
    """A SummaryWriter writing event files into the run folder (so `tensorboard --logdir
    runs` names each run by its folder), or False when tensorboard is not installed.
    purge_step hides what a resumed run logged after its checkpoint, as truncate_epochs does."""
    try:
        import tensorboard  # noqa: F401  (torch's writer needs it)
    except ImportError:
        return False
    try:
        from torch.utils.tensorboard import SummaryWriter
        return SummaryWriter(log_dir=str(path), purge_step=first_epoch, flush_secs=60)
    except Exception as e:  # a broken install must not stop a training run
        from vwwfast.progress import warn
        warn(f"no TensorBoard events for {path}: {type(e).__name__}: {e}")
        return False


def log_epoch(writer, record: dict) -> None:
    """Every number of an epoch record, at step = epoch; the confusion matrix as its 4 cells."""
    epoch = record.get("epoch")
    if not isinstance(epoch, int):
        return
    for key, value in record.items():
        if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool):
            writer.add_scalar(f"{GROUPS.get(key, 'other')}/{key}", value, epoch)
    cm = record.get("confusion")
    if isinstance(cm, list) and len(cm) == 2:
        for name, value in zip(("TN", "FP", "FN", "TP"), [v for row in cm for v in row]):
            writer.add_scalar(f"confusion/{name}", value, epoch)
    writer.flush()
