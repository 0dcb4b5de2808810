"""A sweep's students stepped as one (`--stack-students on`): their weights stacked along a
new first dimension and one forward of the shared batch for all of them with torch.func
(`functional_call` over the architecture, `vmap` over the students), then each student's
own loss (its recipe, its weights), one backward for the sum, and each student's own
optimizer and schedule.

The students' parameters and buffers are views of the stacked tensors while an epoch's steps
run (`bind`), so each student's optimizer updates the stack in place, and BatchNorm's
running statistics, updated inside vmap on the stacked buffers, are each student's own.
`release` gives every student its own copy again before BatchNorm settles, evaluation and
checkpoints. The stack keeps each tensor's strides (channels_last weights stay so), as a
fused optimizer wants its parameters, gradients and state laid out alike.

What differs from the students stepped one by one: dropout masks are drawn for all students
at once from the global random stream (vmap randomness="different"), not from each
student's own state, so a stacked student is not bit-equal to its lone run; with dropout
off it is, within float rounding (tests/test_stacked.py).
"""

from __future__ import annotations

import copy
import time
import warnings

import torch
from torch.func import functional_call, vmap

from vwwfast import distributed as D
from vwwfast.devices import autocast
from vwwfast.errors import UserError

# vmap falls back to a loop for one op of adaptive pooling on channels_last input; correct,
# and the speed is what `bench kd --stack-students on` measures
warnings.filterwarnings("ignore", message="There is a performance drop because we have not yet "
                                          "implemented the batching rule")


def check_configs(cfgs: list) -> None:
    """--stack-students on, refused before any record is made where it cannot apply."""
    if len(cfgs) < 2:
        raise UserError("--stack-students on stacks a sweep's students: give settings as lists "
                        "(e.g. --alpha 0.5,0.6), or drop it")
    if D.active():
        raise UserError("--stack-students on runs in one process; under torchrun use --stack-students off")
    if len({(c.arch, c.width) for c in cfgs}) > 1:
        raise UserError("--stack-students on: the students differ in --arch or --width (one batched "
                        "step needs one shape); use --stack-students off")
    if len({c.bn_momentum for c in cfgs}) > 1:
        raise UserError("--stack-students on: the students differ in --bn-momentum (one BatchNorm "
                        "serves all); use --stack-students off")


def check_stackable(students) -> None:
    """One line when the students cannot share one batched step: another architecture
    (parameter or buffer names and shapes), another BatchNorm momentum, or torchrun."""
    if D.active():
        raise UserError("--stack-students on runs in one process; under torchrun use --stack-students off")
    first = students[0]
    layout = _layout(first.model)
    for s in students[1:]:
        who = f"'{s.label}'" if s.label else "a student"
        if _layout(s.model) != layout:
            raise UserError(f"--stack-students on: {who} has another architecture than the first "
                            f"({s.cfg.arch} vs {first.cfg.arch}); use --stack-students off")
        if _momenta(s.model) != _momenta(first.model):
            raise UserError(f"--stack-students on: {who} has another --bn-momentum than the first "
                            f"(one BatchNorm serves all); use --stack-students off")


def _layout(model):
    return ([(n, tuple(p.shape), p.dtype) for n, p in model.named_parameters()],
            [(n, tuple(b.shape), b.dtype) for n, b in model.named_buffers()])


def _momenta(model):
    return [m.momentum for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


def _stack_like(tensors: list[torch.Tensor]) -> torch.Tensor:
    """[K, *shape] holding the K tensors, each slice with the strides of its tensor."""
    t = tensors[0]
    flat = torch.empty(len(tensors), t.numel(), dtype=t.dtype, device=t.device)
    out = flat.as_strided((len(tensors), *t.shape), (t.numel(), *t.stride()))
    with torch.no_grad():
        for k, x in enumerate(tensors):
            out[k].copy_(x)
    return out


class StackedNet(torch.nn.Module):
    """The students' weights stacked; forward(x) -> [K, N, classes], every student on x."""

    def __init__(self, models: list):
        super().__init__()
        self._base = [copy.deepcopy(models[0]).to("meta").train()]  # not a submodule: no weights of its own
        self.param_names = [n for n, _ in models[0].named_parameters()]
        self.buffer_names = [n for n, _ in models[0].named_buffers()]
        per = [dict(m.named_parameters()) for m in models]
        self.stacked = torch.nn.ParameterList(
            [torch.nn.Parameter(_stack_like([p[n].detach() for p in per])) for n in self.param_names])
        per = [dict(m.named_buffers()) for m in models]
        for i, n in enumerate(self.buffer_names):
            self.register_buffer(f"b{i}", _stack_like([b[n] for b in per]))

    def stacked_buffers(self) -> list[torch.Tensor]:
        return [getattr(self, f"b{i}") for i in range(len(self.buffer_names))]

    def _one(self, params, buffers, x):
        return functional_call(self._base[0], (params, buffers), (x,))

    def forward(self, x):
        params = dict(zip(self.param_names, self.stacked))
        buffers = dict(zip(self.buffer_names, self.stacked_buffers()))
        return vmap(self._one, in_dims=(0, 0, None), randomness="different")(params, buffers, x)


class Stacked:
    """The step of several students (train.student.Student) as one; `step(x, y, z_t)` does
    what each student's own `step` would (sums, counters, optimizer, schedule)."""

    def __init__(self, students: list):
        check_stackable(students)
        self.students = students
        self.device = students[0].device
        self.net = StackedNet([s.model for s in students])
        self.compiled = students[0].compiled
        self.forward_loss = self._forward_loss
        if self.compiled:  # as Student: CUDA graphs on the GPU
            mode = "reduce-overhead" if self.device.type == "cuda" else None
            self.forward_loss = torch.compile(self._forward_loss, mode=mode, dynamic=False)
        self.compile_s = 0.0
        self.bound = False
        self._params = [self._student_tensors(s)[0] for s in students]  # objects kept; .data moves
        self.bind()

    # -- the students' weights: views of the stack while steps run ---------------------
    def _student_tensors(self, s):
        return ([dict(s.model.named_parameters())[n] for n in self.net.param_names],
                [dict(s.model.named_buffers())[n] for n in self.net.buffer_names])

    def bind(self) -> None:
        """Copy the students' current weights into the stack; theirs become views of it."""
        stacks = (list(self.net.stacked), self.net.stacked_buffers())
        with torch.no_grad():
            for k, s in enumerate(self.students):
                for mine, stack in zip(self._student_tensors(s), stacks):
                    for t, st in zip(mine, stack):
                        st[k].copy_(t)
                        t.data = st.detach()[k]
        self.bound = True

    def release(self) -> None:
        """Each student its own copy of its weights again (evaluation, checkpoints)."""
        if not self.bound:
            return
        for s in self.students:
            for tensors in self._student_tensors(s):
                for t in tensors:
                    t.data = t.data.clone()
                    t.grad = None
        self.bound = False

    close = release

    # -- the step ---------------------------------------------------------------------
    def _forward_loss(self, x, y, z_t, scheduled):
        with autocast(self.device):
            z_s = self.net(x)
        total, per = None, []
        for k, s in enumerate(self.students):
            w = s.weights if scheduled is None else {**s.constant_weights, **scheduled[k]}
            loss, means = s.recipe.loss(z_s[k], z_t, y, w)
            per.append((loss, means))
            total = loss if total is None else total + loss
        return total, per

    def step(self, x: torch.Tensor, y: torch.Tensor, z_t: torch.Tensor | None) -> None:
        if not self.bound:
            self.bind()
        first = self.compiled and self.compile_s == 0.0
        t0 = time.perf_counter() if first else 0.0
        self.net.train()
        for p in self.net.stacked:
            p.grad = None
        scheduled = [s.scheduled for s in self.students] if self.compiled else None
        total, per = self.forward_loss(x, y, z_t, scheduled)
        total.backward()  # the students share no weights: each slice's gradient is its own loss's
        grads = [p.grad for p in self.net.stacked]
        for k, (s, (loss, means)) in enumerate(zip(self.students, per)):
            for t, g in zip(self._params[k], grads):
                t.grad = g[k]
            s.optimizer.step()
            s.scheduler.step()
            s.sums += torch.stack([loss.detach(), *means.values()])
            s.steps += 1
            s.optimizer_steps += 1
        if first:  # compilation, shared evenly: the loop reports the sum apart from training
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.compile_s = time.perf_counter() - t0
            for s in self.students:
                s.compile_s += self.compile_s / len(self.students)


class Stacks:
    """The Stacked of the students stepping now, kept across epochs (a compiled step compiles
    once) and made anew only when they change (a student stopped or failed)."""

    def __init__(self):
        self.current: Stacked | None = None

    def get(self, students: list) -> Stacked:
        if self.current is None or self.current.students != students:
            self.close()
            self.current = Stacked(students)
        return self.current

    def close(self) -> None:
        if self.current is not None:
            self.current.release()
