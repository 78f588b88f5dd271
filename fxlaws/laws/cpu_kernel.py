"""The fused CPU square-sum kernel (``kernels/square_sums.cpp``), built once per machine on first use.

Why: the instrument pass needs, for most weight tensors, sums of squares per row (producer of a
channel space) *and* per column (consumer of another). Eagerly that is one square into a scratch
buffer plus two reductions — two to four times the memory traffic of one norm. The kernel streams
each tensor once. It is opt-in (``fxlaws.instrument(..., kernel="cpp")``): the first use compiles
it with ``torch.utils.cpp_extension`` (a C++ compiler and ninja; ~20 s, then cached in
``TORCH_EXTENSIONS_DIR``, by default ``~/.cache/torch_extensions``).
"""

from __future__ import annotations

import functools
import os
import shutil
from pathlib import Path

import torch
from torch import Tensor

__all__ = ["KERNELS", "check_kernel", "square_sums_module", "kernel_eligible"]

KERNELS = ("eager", "cpp")
_SOURCE = Path(__file__).with_name("kernels") / "square_sums.cpp"
_PLAIN = (Tensor, torch.nn.Parameter)


def check_kernel(kernel: str) -> None:
    """Raise ValueError unless ``kernel`` names one of :data:`KERNELS`."""
    if kernel not in KERNELS:
        raise ValueError(f"kernel={kernel!r}: use one of {KERNELS}")


@functools.lru_cache(maxsize=None)
def square_sums_module():
    """The compiled extension (built on the first call of the process, from the on-disk cache after).

    Raises:
        KernelBuildError: no C++ toolchain, or the build failed (the compiler's message is chained).
    """
    from fxlaws.errors import KernelBuildError

    try:
        from torch.utils.cpp_extension import load

        _find_ninja()

        # ATen's parallel_for is inlined OpenMP in builds that use OpenMP: compile the pragmas then
        # (the symbols resolve to the libgomp torch already loaded).
        flags = ["-O3"] + (["-fopenmp"] if torch.backends.openmp.is_available() else [])
        return load(name="fxlaws_square_sums", sources=[str(_SOURCE)], extra_cflags=flags, verbose=False)
    except Exception as exc:  # noqa: BLE001 - any toolchain failure means the same thing to the user
        raise KernelBuildError(
            f"could not build fxlaws' fused CPU kernel ({type(exc).__name__}: {str(exc).strip()[:300]}); "
            "install a C++ compiler and ninja (pip install 'fxlaws[cpp]'), or use kernel='eager'") from exc


def _find_ninja() -> None:
    """torch's builder runs ``ninja`` from PATH; a venv's ninja (the ``ninja`` wheel, extra ``cpp``)
    is not on it unless the venv is activated, so add the wheel's directory when none is found."""
    if shutil.which("ninja"):
        return
    try:
        import ninja
    except ImportError:
        return  # the build then fails with torch's own "Ninja is required" message
    os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")


def kernel_eligible(p: Tensor, axes) -> bool:
    """Whether the kernel computes ``p``'s per-position sums for ``axes`` (else the eager path does).
    Plain tensors only: a tensor subclass (DTensor, wrapper subclasses) may have no storage of its own."""
    return (type(p) in _PLAIN and p.device.type == "cpu" and p.dim() >= 1 and p.dtype in (torch.float32, torch.float64)
            and p.is_contiguous() and set(axes) <= ({0, 1} if p.dim() > 1 else {0}))
