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

import json

import numpy as np
import torch
from torch import nn

from vwwfast.deploy.predictors import (
    META_KEY,
    cpu_copy,
    metadata_name,
    quiet,
    to_pixels,
)
from vwwfast.files import write_atomic

INSTALL = "pip install 'vwwfast[tflite]'"


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
    litert_torch.config.show_progress = False
    size, norm = meta["input_size"], meta["normalization"]
    wrapped = PixelInput(cpu_copy(model), norm["mean"], norm["std"]).eval()
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
    obj = fb.read_model_from_bytearray(bytearray(model))
    obj.metadata = [m for m in (obj.metadata or []) if metadata_name(m.name) != META_KEY]
    buf = schema.BufferT()
    buf.data = np.frombuffer(json.dumps({**meta, "layout": "NHWC pixels 0..255"}).encode(), np.uint8)
    obj.buffers.append(buf)
    entry = schema.MetadataT()
    entry.name, entry.buffer = META_KEY, len(obj.buffers) - 1
    obj.metadata.append(entry)
    write_atomic(path, bytes(fb.convert_object_to_bytearray(obj)))


