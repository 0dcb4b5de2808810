"""TensorBoard event files beside a run's metrics.jsonl (the optional extra
`vwwfast[tensorboard]`): the same scalars, step = epoch."""

from __future__ import annotations

from vwwfast import config as C

GROUPS = {"loss": "loss", "val_acc": "val", "recall_0": "val", "recall_1": "val", "lr": "schedule",
          "img_per_s": "speed", "time_s": "speed"}


def group(key: str, kd: list[str]) -> str:
    """A record key's TensorBoard group: each loss term's mean (loss_<name>) with the loss,
    the terms as they enter it (term_<name>) together, the KD weights (kd) with the lr."""
    if key.startswith("loss_"):
        return "loss"
    if key.startswith("term_"):
        return "loss_terms"
    return "schedule" if key in kd else GROUPS.get(key, "other")


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
    kd = C.kd_settings()
    for key, value in record.items():
        if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool):
            writer.add_scalar(f"{group(key, kd)}/{key}", value, epoch)
    cm = record.get("confusion")
    if isinstance(cm, list) and len(cm) == 2:
        for name, value in zip(("TN", "FP", "FN", "TP"), [v for row in cm for v in row]):
            writer.add_scalar(f"confusion/{name}", value, epoch)
    writer.flush()
