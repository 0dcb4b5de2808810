"""A plain PyTorch loop that distils a student with vwwfast.KDData: the batches `vwwfast
distill` trains on (views rendered on the device, the teacher cache's logits) and its KD loss.

    python examples/own_loop.py --shards shards/vww --cache shards/vww/teacher-mbv3l-224-default-1a2b3c4d.zarr

--cache: the store `vwwfast cache-teacher` made (the path it printed).
"""

import argparse
import json
import sys

import torch
import torchvision

from vwwfast import KDData
from vwwfast.losses import kd_loss

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--shards", required=True, help="folder written by `vwwfast shard`")
p.add_argument("--cache", help="teacher cache of those shards; without it: labels only")
p.add_argument("--epochs", type=int, default=30)
p.add_argument("--batch-size", type=int, default=128)
p.add_argument("--input-size", type=int, default=96)
p.add_argument("--device", default="auto", help="'auto', 'cuda' or 'cpu'")
p.add_argument("--lr", type=float, default=2e-3)
p.add_argument("--alpha", type=float, default=0.5, help="weight of the teacher term")
p.add_argument("--temperature", type=float, default=2.0)
args = p.parse_args()

with KDData(args.shards, args.cache, input_size=args.input_size, device=args.device) as data:
    model = torchvision.models.mobilenet_v3_small(num_classes=2).to(data.device)
    for m in model.modules():  # torchvision's BN momentum 0.01 is too slow for short runs
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = 0.1
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    for epoch in range(1, args.epochs + 1):
        model.train()
        loss = torch.tensor(float("nan"))
        for x, y, z_t, idx in data.train_batches(epoch, args.batch_size):
            loss, terms = kd_loss(model(x), z_t, y, alpha=args.alpha, temperature=args.temperature,
                                  confidence_gamma=0.0, margin_weight=0.0, label_smoothing=0.0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        model.eval()
        right = seen = 0
        with torch.no_grad():
            for x, y, idx in data.val_batches(2 * args.batch_size):
                right += int((model(x).argmax(1) == y).sum())
                seen += len(y)
        print(f"epoch {epoch}: loss {loss.item():.4f}  val acc {right / seen:.4f}", file=sys.stderr)
print(json.dumps({"epoch": epoch, "val_acc": right / seen}))
