"""--stack-students on: a sweep's students in one batched step (torch.func), equal to the
students stepped one by one."""

import pytest
import torch

from vwwfast import config as C
from vwwfast.errors import UserError
from vwwfast.train.stacked import Stacked, check_configs
from vwwfast.train.student import Student

CPU = torch.device("cpu")


def _students(**over):
    """Three students of one sweep (other alphas, lrs, optimizers, seeds), dropout off: under
    vmap its masks come from one stream for all, so only without it can the two ways agree."""
    out = []
    for k, (alpha, lr, optimizer) in enumerate([(0.0, 1e-2, "sgd"), (0.5, 2e-3, "adamw"),
                                                (0.9, 3e-2, "sgd")]):
        cfg = C.resolve(C.DistillConfig, {"shards": "unused", "batch_size": 8, "input_size": 32,
                                          "epochs": 3, "alpha": alpha, "alpha_end": 0.2, "lr": lr,
                                          "optimizer": optimizer, "init_seed": k, "compile": "off",
                                          **over})
        s = Student(cfg, "student", CPU, steps_per_epoch=2)
        for m in s.model.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
        out.append(s)
    return out


def _batches(n):
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(8, 3, 32, 32, generator=g).contiguous(memory_format=torch.channels_last),
             torch.randint(0, 2, (8,), generator=g), torch.randn(8, 2, generator=g)) for _ in range(n)]


def _train(students, stacked: bool):
    """Two epochs of two steps (the scheduled alpha changes between them); each student's
    epoch losses, then its weights and buffers."""
    stack = Stacked(students) if stacked else None
    losses = []
    for epoch, batches in ((1, _batches(2)), (2, _batches(2)[::-1])):
        for s in students:
            s.begin_epoch(epoch)
        for x, y, z in batches:
            if stack:
                stack.step(x, y, z)
            else:
                for s in students:
                    s.step(x, y, z)
        if stack:
            stack.release()
        losses.append([s.epoch_losses() for s in students])
    return losses, [s.model.state_dict() for s in students]


@pytest.mark.slow
def test_stacked_students_step_as_they_do_alone():
    (loose, w_loose), (stacked, w_stacked) = _train(_students(), False), _train(_students(), True)
    for e_loose, e_stacked in zip(loose, stacked):
        for a, b in zip(e_loose, e_stacked):
            assert b["alpha"] == a["alpha"]
            for key in ("loss", "loss_ce", "loss_kl", "loss_margin"):
                assert b[key] == pytest.approx(a[key], abs=1e-5, rel=1e-5), key
    for k, (a, b) in enumerate(zip(w_loose, w_stacked)):
        assert a.keys() == b.keys()
        if k == 1:
            # AdamW divides by the gradient's size: a bias whose true gradient is 0 (a BN shift
            # that the next BN removes) moves by lr on float noise either way; its losses agree
            continue
        for name in a:  # weights after 4 SGD steps, BatchNorm running statistics
            assert torch.allclose(a[name].float(), b[name].float(), atol=1e-5, rtol=1e-4), (k, name)
    # released: every student owns its weights again (checkpoints hold only their own)
    p = [next(s.model.parameters()) for s in _students()]
    assert p[0].untyped_storage().data_ptr() != p[1].untyped_storage().data_ptr()


def test_released_weights_are_the_students_own():
    students = _students()
    stack = Stacked(students)
    x, y, z = _batches(1)[0]
    for s in students:
        s.begin_epoch(1)
    stack.step(x, y, z)
    stack.release()
    ptrs = {next(s.model.parameters()).untyped_storage().data_ptr() for s in students}
    assert len(ptrs) == 3
    first = next(students[0].model.parameters())
    assert first.untyped_storage().nbytes() == first.numel() * first.element_size()


def test_refusals():
    with pytest.raises(UserError, match="settings as lists"):
        check_configs([C.DistillConfig()])
    with pytest.raises(UserError, match="bn-momentum"):
        check_configs([C.DistillConfig(bn_momentum=0.1), C.DistillConfig(bn_momentum=0.2)])
    a = _students()[:1]
    b = Student(C.resolve(C.DistillConfig, {"shards": "unused", "arch": "mobilenet_v3_large",
                                            "input_size": 32, "epochs": 1}), "student", CPU, 2)
    with pytest.raises(UserError, match="another architecture"):
        Stacked(a + [b])


def test_cli_refuses_a_lone_student_stacked(capsys, synth_shards, small_store):
    from conftest import one_line_error
    line = one_line_error(capsys, "distill", "--shards", synth_shards, "--cache", small_store,
                          "--stack-students", "on", "--epochs", "1")
    assert "settings as lists" in line
