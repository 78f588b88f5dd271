"""The fused CPU square-sum kernel (``kernel="cpp"``): same law values as the eager reductions.

Ground truth is float64 ``p.pow(2).sum(...)`` over the other dims (kernel level) and the eager
path's per-family values on the same parameters (model level). The first test builds the
extension (~20 s once per machine, then cached).
"""

import shutil

import pytest
import torch
import torch.nn.functional as F

import fxlaws
from fxlaws.laws import cpu_kernel
from fxlaws.laws.slots import SquareSums, _position_sq
from fxlaws.models import get_model

pytestmark = pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None,
                                reason="no C++ compiler to build the kernel with")


def _reference(p: torch.Tensor, axis: int) -> torch.Tensor:
    dims = [d for d in range(p.dim()) if d != axis]
    return p.double().pow(2).sum(dims)


@pytest.mark.parametrize("dtype,rtol", [(torch.float64, 1e-13), (torch.float32, 1e-6)])
@pytest.mark.parametrize("shape", [(7, 5), (64, 3, 3, 3), (33, 17, 2, 5), (3, 70000), (1, 1), (0, 4), (4, 0, 3)])
def test_kernel_matches_float64_sums_of_squares(shape, dtype, rtol):
    torch.manual_seed(0)
    p = torch.randn(shape, dtype=dtype)
    module = cpu_kernel.square_sums_module()
    for mask, axes in ((1, [0]), (2, [1]), (3, [0, 1])):
        rows, cols = module.square_sums([p], [mask])[0]
        for axis, got in zip((0, 1), (rows, cols)):
            if axis in axes:
                assert got.dtype == dtype and got.shape == (shape[axis],)
                torch.testing.assert_close(got.double(), _reference(p, axis), rtol=rtol, atol=0)
            else:
                assert got is None  # not asked for: an undefined tensor


def test_one_call_over_many_tensors_of_all_sizes():
    """Large tensors are split over threads, small ones handed whole to one: every result still exact."""
    torch.manual_seed(1)
    shapes = [(300, 400), (5,), (64, 64, 3, 3), (10, 3), (1000,), (2, 70000), (0,), (129, 257, 2), (3, 3, 1, 1)]
    tensors = [torch.randn(s, dtype=torch.float64) for s in shapes]
    masks = [3, 1, 3, 2, 1, 1, 1, 3, 3]
    for p, mask, (rows, cols) in zip(tensors, masks, cpu_kernel.square_sums_module().square_sums(tensors, masks)):
        if p.dim() == 1:
            torch.testing.assert_close(rows, p * p, rtol=1e-15, atol=0)
            assert cols is None
            continue
        for axis, got in zip((0, 1), (rows, cols)):
            if mask >> axis & 1:
                torch.testing.assert_close(got, _reference(p, axis), rtol=1e-13, atol=0)
            else:
                assert got is None


def test_kernel_rejects_what_it_cannot_read():
    module = cpu_kernel.square_sums_module()
    with pytest.raises(RuntimeError, match="must be a contiguous CPU tensor"):
        module.square_sums([torch.randn(4, 6).t()], [3])
    with pytest.raises(RuntimeError, match="float32/float64 only"):
        module.square_sums([torch.randn(4, 6).half()], [3])
    # what SquareSums would not hand it goes through the eager path instead
    assert not cpu_kernel.kernel_eligible(torch.randn(4, 6).t(), {0, 1})
    assert not cpu_kernel.kernel_eligible(torch.randn(4, 6, 2), {2})
    assert cpu_kernel.kernel_eligible(torch.randn(4, 6, 2), {0, 1})


def test_storage_less_subclass_parameters_take_the_eager_path():
    """A wrapper tensor subclass has no storage of its own: the kernel would read a null pointer
    (found in review: a segfault). It is not eligible, and the kernel itself refuses it."""
    from torch.testing._internal.two_tensor import TwoTensor

    w = torch.nn.Parameter(TwoTensor(torch.randn(4, 5), torch.randn(4, 5)))
    assert not cpu_kernel.kernel_eligible(w, {0, 1})
    with pytest.raises(RuntimeError, match="no storage of its own"):
        cpu_kernel.square_sums_module().square_sums([w.detach()], [3])
    with torch.no_grad():  # routed to the eager reductions: no crash, the eager result
        sums = SquareSums({"w": w}, {"w": {0, 1}}, None, "cpp")
        torch.testing.assert_close(sums.position_sq("w", 1), _position_sq(w, (1,))[1])


def test_eager_path_with_rows_larger_than_the_scratch():
    """A single axis-0 slice bigger than the scratch buffer (e.g. stacked expert weights) is squared
    whole instead of overflowing the scratch (found in review: a shape error)."""
    torch.manual_seed(0)
    p = torch.randn(2, 3, 50)
    got = _position_sq(p, (0, 1), torch.empty(100))
    for axis in (0, 1):
        torch.testing.assert_close(got[axis].double(), _reference(p, axis), rtol=1e-6, atol=0)


def _trained(name: str, dtype=torch.float64, steps: int = 3):
    torch.manual_seed(0)
    model = get_model(name).to(dtype)
    inputs = tuple(x.to(dtype) if x.is_floating_point() else x for x in model.example_inputs())
    ann = fxlaws.annotate(model, inputs)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(steps):  # away from the initialisation, where symmetric layers agree trivially
        opt.zero_grad()
        out = model(*inputs)
        (out.float().pow(2).mean() if torch.is_tensor(out) else out[0].pow(2).mean()).backward()
        opt.step()
    return model, inputs, ann


@pytest.mark.parametrize("name", ["vgg-bn", "resnet18", "gpt-tiny", "llama-tiny", "moe-tiny"])
def test_instrumented_values_equal_eager_on_builtin_models(name):
    """R1–R3, N1–N3, G1, A1–A5 families of real model code: the kernel's sums give the eager values."""
    model, inputs, ann = _trained(name)
    cpp = fxlaws.instrument(model, ann, kernel="cpp")
    eager = fxlaws.instrument(model, ann, kernel="eager")
    for inst in (cpp, eager):
        inst(*inputs)
    assert cpp.law_metrics.values.dtype == torch.float64
    torch.testing.assert_close(cpp.law_metrics.values, eager.law_metrics.values, rtol=1e-12, atol=1e-12)
    expected = torch.cat([v.detach().reshape(-1) for v in ann.evaluate(model).values()])
    torch.testing.assert_close(cpp.law_metrics.values, expected, rtol=1e-12, atol=1e-12)


def test_float32_model_and_channels_last_weights():
    """float32 sums accumulated in double agree with float64 to float32 precision; channels_last conv
    weights (not contiguous) take the eager path and still agree."""
    model, inputs, ann = _trained("resnet18", dtype=torch.float32, steps=1)
    ref = torch.cat([v.detach().reshape(-1) for v in ann.evaluate(model.double()).values()])
    model.float()
    inst = fxlaws.instrument(model, ann, kernel="cpp")
    inst(*(x.float() for x in inputs))
    torch.testing.assert_close(inst.law_metrics.values.double(), ref, rtol=2e-6, atol=1e-5)
    model.to(memory_format=torch.channels_last)
    inst = fxlaws.instrument(model, ann, kernel="cpp")
    inst(*(x.float() for x in inputs))
    torch.testing.assert_close(inst.law_metrics.values.double(), ref, rtol=2e-6, atol=1e-5)


def test_kernel_mode_trains_like_eager_and_hook_mode_accepts_it():
    model, inputs, ann = _trained("vgg-bn", steps=0)
    cpp = fxlaws.instrument(model, ann, kernel="cpp")
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    hook = fxlaws.instrument(model, ann, mode="hook", optimizer=opt, kernel="cpp")
    for _ in range(3):
        opt.zero_grad()
        F.cross_entropy(cpp(*inputs), torch.zeros(inputs[0].shape[0], dtype=torch.long)).backward()
        opt.step()
    expected = torch.cat([v.detach().reshape(-1) for v in ann.evaluate(model).values()])
    torch.testing.assert_close(hook.law_metrics.values, expected, rtol=1e-12, atol=1e-12)  # after the last step
    assert cpp.metrics()["conservation/step"] == 3.0


def test_bad_kernel_name_and_build_failure_are_clear(monkeypatch):
    model, inputs, ann = _trained("mlp", steps=0)
    with pytest.raises(ValueError, match=r"kernel='fast': use one of \('eager', 'cpp'\)"):
        fxlaws.instrument(model, ann, kernel="fast")

    def broken(*args, **kwargs):
        raise RuntimeError("Error building extension 'fxlaws_square_sums': c++: command not found")

    import torch.utils.cpp_extension

    monkeypatch.setattr(torch.utils.cpp_extension, "load", broken)
    cpu_kernel.square_sums_module.cache_clear()
    try:
        with pytest.raises(fxlaws.KernelBuildError, match=r"command not found.*kernel='eager'"):
            fxlaws.instrument(model, ann, kernel="cpp")
    finally:
        cpu_kernel.square_sums_module.cache_clear()
