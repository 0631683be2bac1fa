"""IEEE float16 → float32 inside Numba kernels, from the raw 16-bit patterns.

Numba has no float16 type on the CPU, and a float32 copy of an (N, 768) embedding matrix would
double the memory traffic of the comparison kernels. So kernels take float16 arrays viewed as
uint16 and widen each element as they read it, with `to_float32`:

- where the compile target converts half precision in hardware (x86 with F16C, every AArch64),
  an LLVM `fpext half` that becomes a vector conversion instruction;
- elsewhere (for example `NUMBA_CPU_NAME=generic`, where LLVM would call a runtime helper that
  Numba's JIT cannot link), integer operations on the bit pattern (several times slower).

Both are exact for every one of the 65,536 bit patterns (NaN payloads aside).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from llvmlite import binding as llvm
from llvmlite import ir
from numba import types
from numba.core import config
from numba.extending import intrinsic, overload

from ubsafe.kernels._jit import helper


def _target_converts_half() -> bool:
    # Mirrors the CPU name and features numba's JIT compiles for (numba.core.codegen).
    arch = llvm.get_process_triple().split("-")[0]
    if arch in ("aarch64", "arm64"):
        return True
    if not arch.startswith(("x86", "i386", "i686")):
        return False
    features = getattr(config, "CPU_FEATURES", None)
    if features is None:
        features = llvm.get_host_cpu_features().flatten()
    return "+f16c" in features.split(",")


#: Whether kernels compiled in this process convert float16 with a hardware instruction.
HARDWARE_HALF: bool = _target_converts_half()


def _fpext_half_typer(typingctx: Any, bits: Any) -> Any:
    if not isinstance(bits, types.Integer) or getattr(bits, "bitwidth", 0) != 16:
        return None

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())

    return types.float32(bits), codegen


def _bits_to_float32_typer(typingctx: Any, bits: Any) -> Any:
    # Numba widens uint32 arithmetic to 64 bits; the signature casts the argument back to 32.
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.uint32), codegen


def _float32_to_bits_typer(typingctx: Any, value: Any) -> Any:
    if value != types.float32:
        return None

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.bitcast(args[0], ir.IntType(32))

    return types.uint32(value), codegen


# Typed as Any: kernels call intrinsics without the typing context their typers take.
_fpext_half: Any = intrinsic(_fpext_half_typer)
_bits_to_float32: Any = intrinsic(_bits_to_float32_typer)
_float32_to_bits: Any = intrinsic(_float32_to_bits_typer)


_MAGNITUDE = np.uint32(0x7FFF)
_SIGN = np.uint32(0x8000)
_EXPONENT = np.uint32(0x0F800000)  # the float16 exponent field after the shift by 13
_REBIAS = np.uint32(0x38000000)  # (127 - 15) << 23
_SUBNORMAL_ONE = np.uint32(0x00800000)
_SUBNORMAL_MAGIC = np.uint32(0x38800000)  # 2**-14 as float32 bits
_S13 = np.uint32(13)
_S16 = np.uint32(16)


@helper
def half_bits_to_float32_portable(bits: np.uint16) -> np.float32:
    """Exact float16 → float32 from the bit pattern, with integer operations and one subtraction.

    Rebias the exponent; infinities and NaN get the all-ones exponent; a subnormal is renormalised
    by subtracting 2**-14 from a normal float, so it stays exact even when the CPU flushes
    denormals to zero.
    """
    h = np.uint32(bits)
    shifted = (h & _MAGNITUDE) << _S13
    exponent = shifted & _EXPONENT
    shifted += _REBIAS
    if exponent == _EXPONENT:
        shifted += _REBIAS
    elif exponent == 0:
        shifted += _SUBNORMAL_ONE
        renormalised = _bits_to_float32(shifted) - _bits_to_float32(_SUBNORMAL_MAGIC)
        shifted = _float32_to_bits(renormalised)
    return _bits_to_float32(shifted | ((h & _SIGN) << _S16))


def to_float32(value: Any) -> Any:
    """float32 of a kernel input element: float16 bits (uint16) are widened, floats cast."""
    raise NotImplementedError("only callable from Numba kernels")


@overload(to_float32)
def _to_float32_overload(value: Any) -> Any:
    # The implementations repeat the stub's signature, annotations included (numba compares them).
    if isinstance(value, types.Integer) and getattr(value, "bitwidth", 0) == 16:
        if HARDWARE_HALF:

            def hardware(value: Any) -> Any:
                return _fpext_half(value)

            return hardware

        def portable(value: Any) -> Any:
            return half_bits_to_float32_portable(value)

        return portable
    if isinstance(value, types.Float):

        def cast(value: Any) -> Any:
            return np.float32(value)

        return cast
    return None


def kernel_view(name: str, array: Any) -> np.ndarray:
    """A C-contiguous 2-D view that kernels read with `to_float32`: float16 as uint16 bits.

    float32 passes through; float16 is reinterpreted, never converted; anything else is refused.
    """
    arr = np.asarray(array)
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected an (N, D) embedding array, got shape {arr.shape}")
    if arr.dtype == np.float16:
        return np.ascontiguousarray(arr).view(np.uint16)
    if arr.dtype == np.float32:
        return np.ascontiguousarray(arr)
    raise TypeError(
        f"{name}: expected float16 or float32 embeddings, got {arr.dtype} "
        "(the embedding cache stores float16; cast other data with .astype(np.float32))"
    )
