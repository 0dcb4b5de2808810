"""Every model file vwwfast scores, as one kind of function: a normalised NCHW batch ->
logits. A vwwfast checkpoint through PyTorch, an exported .onnx through onnxruntime, a
.tflite through the LiteRT interpreter (the optional extra `vwwfast[tflite]`). `vwwfast
eval` and `vwwfast export` load files only through `load_model`, so a file's accuracy in
export.json is what `vwwfast eval FILE` says."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from vwwfast.constants import IMAGENET_MEAN, IMAGENET_STD
from vwwfast.errors import UserError
from vwwfast.models import model_from_checkpoint
from vwwfast.train.evaluate import Predict, model_predictor

EXPORTED = {".onnx": "onnx", ".tflite": "tflite"}
META_KEY = "vwwfast"   # ONNX metadata_props key / TFLite metadata name holding our JSON
TFLITE_INSTALL = "pip install 'vwwfast[tflite]'"


@dataclass
class Loaded:
    predict: Predict
    input_size: int
    fixed_size: bool         # an exported file runs only at its own size
    shards: Optional[str]    # the shards it was trained on, when recorded


def load_model(path: Path, device) -> Loaded:
    """Any model file `vwwfast eval` takes, as a predictor of normalised NCHW batches."""
    path = Path(path)
    kind = EXPORTED.get(path.suffix.lower(), "checkpoint")
    if kind == "checkpoint":
        model, ckpt = model_from_checkpoint(path, device=device)
        model = model.to(memory_format=torch.channels_last)
        return Loaded(model_predictor(model), ckpt["input_size"], False,
                      (ckpt.get("config") or {}).get("shards"))
    if kind == "onnx":
        predict, meta = onnx_predictor(path)
    else:
        predict, meta = tflite_predictor(path)
    norm = meta.get("normalization")
    if norm and (list(norm["mean"]) != list(IMAGENET_MEAN) or list(norm["std"]) != list(IMAGENET_STD)):
        raise UserError(f"{path} expects normalisation {norm}; vwwfast renders with ImageNet's")
    if not meta.get("input_size"):
        raise UserError(f"{path}: its input has no fixed size; vwwfast needs [B, 3, S, S]")
    return Loaded(predict, int(meta["input_size"]), True, meta.get("shards"))



def onnx_predictor(path: Path):
    """(predict, meta): predict maps a normalised NCHW batch to logits through onnxruntime."""
    import onnx
    import onnxruntime as ort
    try:
        proto = onnx.load(str(path), load_external_data=False)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as e:  # protobuf DecodeError, ORT's InvalidGraph / Fail: not a model
        raise UserError(f"{path} is not a readable ONNX model ({type(e).__name__}); pass a "
                        f"model.onnx written by `vwwfast export`") from None
    props = {p.key: p.value for p in proto.metadata_props}
    meta = json.loads(props[META_KEY]) if META_KEY in props else {}
    inputs = session.get_inputs()
    shape = inputs[0].shape
    if len(inputs) != 1 or len(shape) != 4 or shape[1] != 3:
        raise UserError(f"{path}: expected one NCHW image input [B, 3, S, S], got "
                        f"{[(i.name, i.shape) for i in inputs]}")
    if not meta:  # an ONNX file from elsewhere: take its size, assume ImageNet normalisation
        meta = {"input_size": shape[2] if isinstance(shape[2], int) else None}
    name = inputs[0].name

    def predict(x: torch.Tensor) -> torch.Tensor:
        out = session.run(None, {name: x.float().cpu().numpy()})[0]
        return torch.from_numpy(out).to(x.device)
    return predict, meta


def require_tflite(convert: bool = True) -> None:
    """One line saying what to install, before any work, when the extra is missing
    (convert=False: only the interpreter, to score a .tflite file)."""
    try:
        with quiet():  # their C++ start-up logs
            import ai_edge_litert.interpreter  # noqa: F401
            if convert:
                import ai_edge_quantizer  # noqa: F401
                import litert_torch  # noqa: F401
    except ImportError as e:
        raise UserError(f"TFLite needs the optional extra ({e.name} is not installed): "
                        f"{TFLITE_INSTALL}") from None


@contextlib.contextmanager
def quiet():
    """Keep the converter's and quantizer's chatter (C++ logs, tqdm bars, debug warnings)
    off the console; replay it on stderr if they fail."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    text = io.StringIO()
    with tempfile.TemporaryFile() as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            with contextlib.redirect_stdout(text), contextlib.redirect_stderr(text), \
                    warnings.catch_warnings():
                warnings.simplefilter("ignore")
                yield
        except BaseException:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            log.seek(0)
            sys.stderr.write(log.read().decode(errors="replace") + text.getvalue())
            raise
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def metadata_name(name) -> str:
    return name.decode() if isinstance(name, bytes) else str(name)


def read_meta(model: bytes) -> dict:
    from ai_edge_litert.tools import flatbuffer_utils as fb
    obj = fb.read_model_from_bytearray(bytearray(model))
    for m in obj.metadata or []:
        if metadata_name(m.name) == META_KEY:
            return json.loads(bytes(np.asarray(obj.buffers[m.buffer].data, np.uint8)).decode())
    return {}


def to_pixels(x: torch.Tensor, norm: dict) -> torch.Tensor:
    """Normalised NCHW -> NHWC pixels 0..255 (what the TFLite files take)."""
    mean = torch.tensor(norm["mean"], device=x.device).reshape(1, 3, 1, 1)
    std = torch.tensor(norm["std"], device=x.device).reshape(1, 3, 1, 1)
    return ((x.float() * std + mean) * 255).permute(0, 2, 3, 1).contiguous()



def tflite_predictor(path):
    """(predict, meta): a normalised NCHW batch -> logits through the TFLite interpreter;
    int8 files get pixels rounded to integers, as a camera gives them."""
    require_tflite(convert=False)
    from ai_edge_litert.interpreter import Interpreter
    data = open(path, "rb").read()
    try:
        with quiet():
            it = Interpreter(model_content=data)
        meta = read_meta(data)
    except Exception as e:
        raise UserError(f"{path} is not a readable TFLite model ({type(e).__name__}); pass a "
                        f"model.tflite written by `vwwfast export --format tflite`") from None
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    shape = list(inp["shape"])
    if len(shape) != 4 or shape[3] != 3:
        raise UserError(f"{path}: expected one NHWC image input [1, S, S, 3], got {shape}")
    meta = {**meta, "input_size": int(shape[1])}
    norm = meta.get("normalization") or {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
    in_scale, in_zero = inp["quantization"]
    out_scale, out_zero = out["quantization"]
    batch = [0]

    def predict(x: torch.Tensor) -> torch.Tensor:
        pixels = to_pixels(x, norm).cpu().numpy()
        if batch[0] != len(pixels):  # the files hold batch 1; score whole batches at once
            with quiet():
                it.resize_tensor_input(inp["index"], [len(pixels), *shape[1:]])
                it.allocate_tensors()
            batch[0] = len(pixels)
        if inp["dtype"] == np.int8:
            q = np.round(np.round(pixels) / in_scale) + in_zero
            it.set_tensor(inp["index"], np.clip(q, -128, 127).astype(np.int8))
        else:
            it.set_tensor(inp["index"], pixels.astype(np.float32))
        it.invoke()
        z = it.get_tensor(out["index"])
        z = (z.astype(np.float32) - out_zero) * out_scale if out["dtype"] == np.int8 else z
        return torch.from_numpy(np.array(z, dtype=np.float32)).to(x.device)
    return predict, meta


def cpu_copy(model: torch.nn.Module) -> torch.nn.Module:
    model = getattr(model, "_orig_mod", model)
    return copy.deepcopy(model).to(  # type: ignore[call-overload]  # torch's stub: no device + memory_format
        "cpu", memory_format=torch.contiguous_format).float().eval()
