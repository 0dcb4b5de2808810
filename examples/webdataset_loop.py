"""The loop of own_loop.py fed by webdataset: vwwfast.wds_dataset gives each stored sample
(JPEG bytes, label) with an epoch's view parameters and teacher logits; DataLoader workers
decode and render the view with torchvision (vwwfast.render_view), where any transform of
your own could follow.

    python examples/webdataset_loop.py --shards shards/vww --cache shards/vww/teacher-mbv3l-224-default-1a2b3c4d.zarr
"""

import argparse
import functools
import json
import sys

import torch
import torchvision
import webdataset as wds

from vwwfast import render_view, wds_dataset
from vwwfast.losses import kd_loss


def train_view(sample, size):
    x = render_view(sample["jpg"], sample["params"], size, normalize=True)
    return x, sample["cls"], torch.from_numpy(sample["logits"])


def val_view(sample, size):  # params None: the whole image, as distill validates
    return render_view(sample["jpg"], None, size, normalize=True), sample["cls"]


p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--shards", required=True, help="folder written by `vwwfast shard`")
p.add_argument("--cache", required=True, help="teacher cache of those shards")
p.add_argument("--epochs", type=int, default=30)
p.add_argument("--batch-size", type=int, default=128)
p.add_argument("--input-size", type=int, default=96)
p.add_argument("--device", default="auto", help="'auto', 'cuda' or 'cpu'")
p.add_argument("--workers", type=int, default=2, help="DataLoader workers")
p.add_argument("--lr", type=float, default=2e-3)
p.add_argument("--alpha", type=float, default=0.5, help="weight of the teacher term")
p.add_argument("--temperature", type=float, default=2.0)
args = p.parse_args()
device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                      else "cpu" if args.device == "auto" else args.device)


def loader(pipeline, render):
    pipeline = pipeline.compose(wds.map(functools.partial(render, size=args.input_size)))
    return torch.utils.data.DataLoader(pipeline, batch_size=args.batch_size, num_workers=args.workers,
                                       drop_last=render is train_view)  # full batches, as distill


model = torchvision.models.mobilenet_v3_small(num_classes=2).to(device)
for m in model.modules():  # torchvision's BN momentum 0.01 is too slow for short runs
    if isinstance(m, torch.nn.BatchNorm2d):
        m.momentum = 0.1
opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
for epoch in range(1, args.epochs + 1):
    model.train()
    loss = torch.tensor(float("nan"))
    for x, y, z_t in loader(wds_dataset(args.shards, "train", args.cache, epoch), train_view):
        x, y, z_t = x.to(device), y.to(device), z_t.to(device)
        loss, terms = kd_loss(model(x), z_t, y, alpha=args.alpha, temperature=args.temperature,
                              confidence_gamma=0.0, margin_weight=0.0, label_smoothing=0.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    right = seen = 0
    with torch.no_grad():
        for x, y in loader(wds_dataset(args.shards, "val"), val_view):
            right += int((model(x.to(device)).argmax(1).cpu() == y).sum())
            seen += len(y)
    print(f"epoch {epoch}: loss {loss.item():.4f}  val acc {right / seen:.4f}", file=sys.stderr)
print(json.dumps({"epoch": epoch, "val_acc": right / seen}))
