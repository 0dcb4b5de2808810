"""TFLite export (the optional extra `vwwfast[tflite]`): litert-torch converts, ai-edge-quantizer
quantizes to full int8, ai-edge-litert's interpreter scores the files.

The TFLite files take what a camera gives: NHWC [1, S, S, 3] RGB pixels 0..255; the model
divides by 255 and normalises inside. The int8 file's input range is pinned to 0..255
(scale 1, zero point -128), so a device feeds `int8 = pixel - 128`, as TFLite Micro's person
detection example does. Two traps (measured; docs/EXPORT.md): ai-edge-quantizer's default
calibration averages per-sample min/max, which clips logits (min/max update used here), and
TFLite Micro reads every constant as zero from the buffers-at-offset layout the quantizer
writes (re-packed here with flatbuffer_utils, which inlines them).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import tempfile
import warnings

import numpy as np
import torch
from torch import nn

from vwwfast.errors import UserError

INSTALL = "pip install 'vwwfast[tflite]'"


def require(convert: bool = True) -> None:
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
                        f"{INSTALL}") from None


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


class PixelInput(nn.Module):
    """NHWC RGB pixels 0..255 -> the normalised NCHW batch the student was trained on."""

    def __init__(self, model: nn.Module, mean, std):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean).reshape(1, 3, 1, 1) * 255)
        self.register_buffer("scale", 1 / (torch.tensor(std).reshape(1, 3, 1, 1) * 255))

    def forward(self, x):
        return self.model((x.permute(0, 3, 1, 2) - self.mean) * self.scale)


def convert_float(model: nn.Module, meta: dict) -> bytes:
    """Float32 TFLite, input [1, S, S, 3] pixels."""
    import litert_torch
    from vwwfast.export import _cpu_copy
    litert_torch.config.show_progress = False
    size, norm = meta["input_size"], meta["normalization"]
    wrapped = PixelInput(_cpu_copy(model), norm["mean"], norm["std"]).eval()
    with quiet():
        edge = litert_torch.convert(wrapped, (torch.rand(1, size, size, 3) * 255,))
        return bytes(edge.model_content())


def settings() -> dict:
    from importlib.metadata import version
    return {"tool": f"litert-torch {version('litert-torch')}, ai-edge-quantizer "
                    f"{version('ai-edge-quantizer')} recipe static_wi8_ai8",
            "weights": "int8, per channel", "activations": "int8, per tensor",
            "input": "int8 = pixel - 128 (scale 1, zero point -128), NHWC [1, S, S, 3]",
            "output": "int8 logits (dequantize with the output tensor's scale / zero point)",
            "calibration": "min and max over every calibration view (not the default average)"}


def quantize_int8(float_model: bytes, calib: np.ndarray, meta: dict) -> bytes:
    """Full-integer int8 (int8 input and output) calibrated on `calib` (normalised NCHW)."""
    with quiet():
        return _quantize_int8(float_model, calib, meta)


def _quantize_int8(float_model: bytes, calib: np.ndarray, meta: dict) -> bytes:
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_quantizer import calibrator, quantizer, recipe, recipe_manager
    from ai_edge_quantizer.utils import qsv_utils
    rm = recipe_manager.RecipeManager()
    rm.load_quantization_recipe(recipe.static_wi8_ai8())
    signature = Interpreter(model_content=float_model).get_signature_list()
    key = next(iter(signature))
    name = signature[key]["inputs"][0]
    pixels = to_pixels(torch.from_numpy(calib), meta["normalization"]).numpy()
    cal = calibrator.Calibrator(float_model, num_threads=max(1, torch.get_num_threads()),
                                qsv_update_func=qsv_utils.min_max_update)
    cal.calibrate({key: [{name: pixels[i:i + 1]} for i in range(len(pixels))]}, rm)  # a list: read twice
    qsvs = cal.get_model_qsvs()
    # Pin the input range to the pixel range, whatever the views held: int8 = pixel - 128.
    first = _input_tensor_name(float_model)
    if first in qsvs:
        shape = np.shape(qsvs[first]["min"])
        qsvs[first] = {**qsvs[first], "min": np.zeros(shape, np.float32),
                       "max": np.full(shape, 255.0, np.float32)}
    q = quantizer.Quantizer(float_model, recipe.static_wi8_ai8())
    return bytes(q.quantize(qsvs, enable_progress_bar=False,
                            enable_progress_report=False).quantized_model)


def _input_tensor_name(model: bytes) -> str:
    from ai_edge_litert.interpreter import Interpreter
    it = Interpreter(model_content=model)
    return it.get_input_details()[0]["name"]


def write(model: bytes, path, meta: dict) -> None:
    """Re-pack (inlines the buffers TFLite Micro would read as zeros), add our metadata."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils as fb
    from vwwfast.export import META_KEY
    from vwwfast.files import write_atomic
    obj = fb.read_model_from_bytearray(bytearray(model))
    obj.metadata = [m for m in (obj.metadata or []) if _name(m.name) != META_KEY]
    buf = schema.BufferT()
    buf.data = np.frombuffer(json.dumps({**meta, "layout": "NHWC pixels 0..255"}).encode(), np.uint8)
    obj.buffers.append(buf)
    entry = schema.MetadataT()
    entry.name, entry.buffer = META_KEY, len(obj.buffers) - 1
    obj.metadata.append(entry)
    write_atomic(path, bytes(fb.convert_object_to_bytearray(obj)))


def _name(name) -> str:
    return name.decode() if isinstance(name, bytes) else str(name)


def read_meta(model: bytes) -> dict:
    from ai_edge_litert.tools import flatbuffer_utils as fb
    from vwwfast.export import META_KEY
    obj = fb.read_model_from_bytearray(bytearray(model))
    for m in obj.metadata or []:
        if _name(m.name) == META_KEY:
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
    require(convert=False)
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
    norm = meta.get("normalization") or {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
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
