"""What a model costs on a microcontroller: parameters, MACs, and the int8 activation memory.

- params: every parameter of the model (BatchNorm's running statistics are buffers, not
  parameters; exporters fold BatchNorm into the convolutions).
- MACs: multiply-accumulates of one image at the run's input size, counted by
  torch.utils.flop_counter.FlopCounterMode (convolutions and matrix products): FLOPs / 2.
- peak activation bytes: an ESTIMATE of the tensor arena TensorFlow Lite Micro needs besides
  the weights, at int8 (1 byte per element) and batch 1. The graph runs in its order; a
  tensor is live from the operation that makes it to the last one that reads it; the peak
  is the largest sum of live tensors at any operation. Weights are left out. A real
  planner may share or split buffers differently (and TFLite Micro adds its own bookkeeping
  and scratch buffers), so the real arena differs by some percent.
  Two ways to get it: from the exported graph (ONNX or TFLite file: `file_peak_bytes`), or,
  before any file exists (distill's budget check), from the PyTorch model traced with
  torch.fx (`torch_peak_bytes`), where the element-wise steps that an exporter fuses into
  the convolution before them (BatchNorm, activations) reuse their input's buffer.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from vwwfast.errors import UserError
from vwwfast.fmt import fmt_bytes, parse_bytes

# Modules and functions whose output an exporter folds or fuses into the step before them
# (or that only view their input): their output reuses their input's buffer when nothing
# later reads the input.
_IN_PLACE_MODULES = (nn.modules.batchnorm._BatchNorm, nn.ReLU, nn.ReLU6, nn.Hardswish,
                     nn.Hardsigmoid, nn.SiLU, nn.Sigmoid, nn.Dropout, nn.Identity, nn.Flatten)
_IN_PLACE_FUNCTIONS = {torch.flatten, torch.relu, torch.nn.functional.relu,
                       torch.nn.functional.hardswish, torch.nn.functional.hardsigmoid,
                       torch.nn.functional.dropout}


def count_params(model: nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def _cpu_eval_copy(model: nn.Module) -> nn.Module:
    model = getattr(model, "_orig_mod", model)  # torch.compile wrapper
    model = getattr(model, "module", model)     # DistributedDataParallel wrapper
    return copy.deepcopy(model).cpu().float().eval().to(memory_format=torch.contiguous_format)


def count_macs(model: nn.Module, input_size: int) -> int:
    """Multiply-accumulates of one [1, 3, S, S] image: FlopCounterMode's FLOPs / 2."""
    from torch.utils.flop_counter import FlopCounterMode
    m = _cpu_eval_copy(model)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        m(torch.zeros(1, 3, input_size, input_size))
    return int(counter.get_total_flops() // 2)


def torch_peak_bytes(model: nn.Module, input_size: int) -> int:
    """The int8 activation peak (module docstring) of the model traced with torch.fx, at
    batch 1, in the order its forward runs."""
    from torch.fx import symbolic_trace
    from torch.fx.passes.shape_prop import ShapeProp
    m = _cpu_eval_copy(model)
    try:
        gm = symbolic_trace(m)
    except Exception as e:  # a model whose forward torch.fx cannot follow
        raise UserError(f"cannot trace {type(m).__name__} to estimate its activation memory "
                        f"({type(e).__name__}); drop --max-ram") from None
    with torch.no_grad():
        ShapeProp(gm).propagate(torch.zeros(1, 3, input_size, input_size))
    modules = dict(gm.named_modules())
    nodes = list(gm.graph.nodes)
    last_use = {}
    for i, node in enumerate(nodes):
        for a in node.all_input_nodes:
            last_use[a] = i

    def numel(node) -> int:
        meta = node.meta.get("tensor_meta")
        return math.prod(meta.shape) if meta is not None and hasattr(meta, "shape") else 0

    def in_place(node) -> bool:
        if node.op == "call_module":
            return isinstance(modules.get(node.target), _IN_PLACE_MODULES)
        if node.op == "call_method":
            return node.target in ("flatten", "view", "reshape", "relu", "relu_")
        return node.op == "call_function" and node.target in _IN_PLACE_FUNCTIONS

    live: dict = {}
    peak = 0
    for i, node in enumerate(nodes):
        if node.op in ("get_attr", "output"):
            continue
        size = numel(node)
        src = node.all_input_nodes[0] if node.all_input_nodes else None
        if in_place(node) and src in live and last_use.get(src) == i and live[src] >= size:
            live[node] = live.pop(src)  # the same buffer, renamed
        else:
            live[node] = size
            peak = max(peak, sum(live.values()))
        for a in node.all_input_nodes:
            if last_use.get(a) == i:
                live.pop(a, None)
        if node not in last_use:
            live.pop(node, None)
    return int(peak)


def model_figures(model: nn.Module, input_size: int) -> dict:
    """What a run records of its model (summary.json) and distill's budgets check."""
    params = count_params(model)
    return {"params": params, "macs": count_macs(model, input_size),
            "int8_weight_bytes_est": params,  # int8: about one byte per parameter
            "peak_activation_bytes_est": torch_peak_bytes(model, input_size)}


# ---------------------------------------------------------------------------------------
# Exported files

# Steps an int8 runtime has no buffer for: ONNX's QDQ pairs (TFLite Micro runs int8 end to
# end) and identities.
_ALIAS_OPS = {"QuantizeLinear", "DequantizeLinear", "Identity"}


def _graph_peak(steps, numel, constant: set) -> int:
    """steps: [(inputs, outputs)] in execution order; numel: tensor -> elements; constant:
    weight tensors (left out, with everything computed from them alone)."""
    constant = set(constant)
    steps = [([t for t in inputs if t is not None and t != ""], outputs)  # "": ONNX's missing input
             for inputs, outputs in steps]  # (TFLite names tensors by index: 0 is one)
    for inputs, outputs in steps:
        real = inputs
        if real and all(t in constant for t in real):
            constant.update(outputs)
    last_use = {}
    for i, (inputs, _) in enumerate(steps):
        for t in inputs:
            if t not in constant:
                last_use[t] = i
    live: dict = {}
    peak = 0
    for i, (inputs, outputs) in enumerate(steps):
        for t in inputs:  # the graph's input is live from its first reader on
            if t not in constant and t not in live:
                live[t] = numel(t)
        for t in outputs:
            if t not in constant:
                live[t] = numel(t)
        peak = max(peak, sum(live.values()))
        for t in [t for t in live if last_use.get(t, -1) <= i]:
            live.pop(t)
    return int(peak)


def onnx_peak_bytes(path) -> int:
    """The int8 activation peak of an ONNX file (module docstring) at batch 1: its nodes in
    the file's order (a topological order, ONNX requires one), shapes from ONNX shape
    inference, a symbolic dimension (the batch) taken as 1. An int8 runtime runs what the
    QDQ file spells out in several nodes as one operation: a Quantize / Dequantize pair is
    the tensor it wraps, and x * HardSigmoid(x) is one hard-swish."""
    import onnx
    proto = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    g = proto.graph
    shapes = {}
    for v in list(g.input) + list(g.value_info) + list(g.output):
        dims = v.type.tensor_type.shape.dim
        shapes[v.name] = math.prod(d.dim_value if d.HasField("dim_value") else 1 for d in dims)
    constant = {t.name for t in g.initializer}
    alias: dict = {}
    nodes = []
    for node in g.node:
        inputs = [alias.get(t, t) for t in node.input if t]
        if node.op_type == "Constant" or (inputs and all(t in constant for t in inputs)):
            constant.update(node.output)
            continue
        if node.op_type in _ALIAS_OPS:
            alias.update({t: inputs[0] for t in node.output})
            continue
        nodes.append((node.op_type, inputs, list(node.output)))
    readers: dict = {}
    for _, inputs, _ in nodes:
        for t in inputs:
            readers[t] = readers.get(t, 0) + 1
    hard_sigmoid = {outputs[0]: inputs[0] for op, inputs, outputs in nodes if op == "HardSigmoid"}
    swish = set()  # HardSigmoid outputs read only by a Mul with the HardSigmoid's own input
    for op, inputs, _ in nodes:
        if op == "Mul" and len(inputs) == 2:
            for h, x in (inputs, inputs[::-1]):
                if hard_sigmoid.get(h) == x and readers.get(h) == 1:
                    swish.add(h)
    steps = []
    for op, inputs, outputs in nodes:
        if op == "HardSigmoid" and outputs[0] in swish:
            continue
        if op == "Mul" and any(t in swish for t in inputs):
            inputs = [t for t in inputs if t not in swish]
        steps.append((inputs, outputs))
    return _graph_peak(steps, lambda t: shapes.get(t, 0), constant)


def tflite_peak_bytes(path) -> int:
    """The int8 activation peak of a TFLite file (module docstring): its first subgraph's
    operators in order; a tensor with data in its buffer is a weight."""
    from ai_edge_litert.tools import flatbuffer_utils as fb
    model = fb.convert_bytearray_to_object(bytearray(open(path, "rb").read()))
    sg = model.subgraphs[0]

    def has_data(t) -> bool:
        buf = model.buffers[t.buffer] if t.buffer < len(model.buffers) else None
        return buf is not None and ((buf.data is not None and len(buf.data) > 0) or bool(buf.offset))

    constant = {i for i, t in enumerate(sg.tensors) if has_data(t)}
    steps = [([i for i in op.inputs if i >= 0], [i for i in op.outputs if i >= 0])
             for op in sg.operators]
    return _graph_peak(steps, lambda i: int(math.prod(max(int(d), 1) for d in
                                                      (sg.tensors[i].shape if sg.tensors[i].shape
                                                       is not None else []))), constant)


def file_peak_bytes(path) -> int:
    return tflite_peak_bytes(path) if str(path).endswith(".tflite") else onnx_peak_bytes(path)


# ---------------------------------------------------------------------------------------
# Budgets

def check_budget(flag: str, limit_text, value: int, what: str) -> None:
    """One line when `value` bytes of `what` exceed the budget `flag` `limit_text`."""
    if limit_text is None:
        return
    limit = parse_bytes(limit_text)
    if value > limit:
        raise UserError(f"{what} is {fmt_bytes(value)} ({value:,} bytes), over {flag} {limit_text} "
                        f"({limit:,} bytes) by {fmt_bytes(value - limit)} ({value - limit:,} bytes)")
