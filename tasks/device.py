"""The torch device a stage runs on, from ``runtime.device``, and the mixed precision it runs in.

Mixed precision (``*.mixed_precision``: auto, no, fp16, bf16) means torch autocast around the
networks' forward passes; weights, optimizer state, EMA and losses stay float32. ``auto`` picks bf16
on a CUDA card that has it (else fp16) and on a CPU that computes bf16 natively: Intel AMX
(``amx_bf16``) or AVX-512 BF16 (``avx512_bf16``, also AMD Zen 4 and later); float32 elsewhere, where
bf16 is emulated and slower than float32.

The CPU's flags come from ``/proc/cpuinfo``: torch's own probes do not tell native from emulated
bf16 (``torch.backends.cpu.get_cpu_capability()`` says "AVX512" on CPUs with and without it, and
``torch.ops.mkldnn._is_mkldnn_bf16_supported()`` is true on any AVX-512BW CPU).

The memory format of the conv networks (``runtime.channels_last``: auto, true, false): channels_last
(NHWC) lets oneDNN and cuDNN run convolutions without reordering every activation. A conv whose
weights are channels_last returns channels_last activations, so converting the module (and, for the
first conv, its 4-D input) is enough; an input already channels_last makes any conv run so, which
is why inputs are put in their network's format. ``auto`` turns it on only where it measured faster
(``CHANNELS_LAST_FASTER_BF16``): the networks differ.
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

import torch
from torch import nn

SPEED_FLAGS = ("amx_bf16", "amx_tile", "avx512_bf16", "avx512_fp16", "avx512f")  # what benchmarks name
CPUINFO = Path("/proc/cpuinfo")
NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")
PRECISION_NAMES = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


def resolve_device(setting: str) -> torch.device:
    """``auto`` picks CUDA when present; ``cuda`` without a GPU is an error, not a silent CPU run."""
    if setting == "cuda" and not torch.cuda.is_available():
        raise ValueError("runtime.device is 'cuda' but no CUDA device is available")
    if setting == "auto":
        setting = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(setting)


@functools.cache
def _cpuinfo_text() -> str:
    try:
        return CPUINFO.read_text(errors="replace")
    except OSError:  # not Linux, or a sandbox without /proc
        return ""


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """The feature flags the first CPU lists in ``cpuinfo`` (the text of /proc/cpuinfo, read when None)."""
    text = _cpuinfo_text() if cpuinfo is None else cpuinfo
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() in ("flags", "Features"):  # x86, ARM
            return frozenset(value.split())
    return frozenset()


def cpu_model(cpuinfo: str | None = None) -> str:
    """The first CPU's model name in ``cpuinfo`` (the text of /proc/cpuinfo, read when None)."""
    text = _cpuinfo_text() if cpuinfo is None else cpuinfo
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == "model name":
            return value.strip()
    return platform.processor() or "unknown CPU"


def describe_cpu(cpuinfo: str | None = None) -> str:
    """The CPU model, the flags speed depends on and the CPUs this process may use: what every
    benchmark prints beside its figures."""
    shown = [flag for flag in SPEED_FLAGS if flag in cpu_flags(cpuinfo)]
    return (f"{cpu_model(cpuinfo)}; flags: {' '.join(shown) or 'no AVX-512 / AMX'}; "
            f"{len(os.sched_getaffinity(0))} usable CPUs")


def native_bf16(cpuinfo: str | None = None) -> tuple[bool, str]:
    """Whether the CPU computes bf16 natively, and the reason in words (its flags, or their absence)."""
    flags = cpu_flags(cpuinfo)
    found = [flag for flag in NATIVE_BF16_FLAGS if flag in flags]
    if found:
        return True, f"cpu flags {','.join(found)}"
    if not flags:
        return False, f"no cpu flags readable from {CPUINFO}"
    return False, f"cpu has neither {' nor '.join(NATIVE_BF16_FLAGS)}"


@dataclass(frozen=True)
class Precision:
    """The autocast dtype chosen (None: float32 throughout) and why."""

    dtype: torch.dtype | None
    reason: str

    @property
    def name(self) -> str:
        return PRECISION_NAMES[self.dtype]

    def params(self) -> dict[str, str]:
        """What a stage logs to MLflow beside its own params."""
        return {"runtime.precision": self.name, "runtime.precision_reason": self.reason}


def choose_precision(setting: str, device: torch.device, key: str = "mixed_precision",
                     cpuinfo: str | None = None) -> Precision:
    """The precision of ``setting`` (auto, no, fp16, bf16; ``key`` names it in errors) on ``device``.
    ``cpuinfo`` replaces /proc/cpuinfo's text (tests)."""
    if setting == "no":
        return Precision(None, f"{key} = no")
    if setting not in ("auto", "fp16", "bf16"):
        raise ValueError(f"{key}: {setting!r} is not one of auto, no, fp16, bf16")
    if device.type == "cuda":
        return _cuda_precision(setting, key)
    if device.type != "cpu":
        return Precision(None, f"autocast is not used on {device.type}")
    if setting == "fp16":
        raise ValueError(f"{key}: fp16 autocast is for CUDA only; on a CPU use bf16, auto or no")
    native, why = native_bf16(cpuinfo)
    if setting == "bf16":
        return Precision(torch.bfloat16, f"{key} = bf16 ({why}{'' if native else ': emulated, slower than fp32'})")
    return Precision(torch.bfloat16, why) if native else Precision(None, why)


def _cuda_precision(setting: str, key: str) -> Precision:
    if setting == "auto":
        if torch.cuda.is_bf16_supported():
            return Precision(torch.bfloat16, "cuda device supports bf16")
        return Precision(torch.float16, "cuda device without bf16")
    return Precision({"fp16": torch.float16, "bf16": torch.bfloat16}[setting], f"{key} = {setting}")


def autocast_dtype(setting: str, device: torch.device, key: str = "mixed_precision",
                   cpuinfo: str | None = None) -> torch.dtype | None:
    """The autocast dtype of ``setting`` on ``device`` (None: float32); see ``choose_precision``."""
    return choose_precision(setting, device, key, cpuinfo).dtype


def precision_params(setting: str, device: torch.device | str, key: str = "mixed_precision") -> dict[str, str]:
    """``runtime.precision`` and ``runtime.precision_reason`` of a stage, for its MLflow params."""
    return choose_precision(setting, torch.device(device), key).params()


@contextlib.contextmanager
def autocast(device: torch.device | str, dtype: torch.dtype | None) -> Iterator[None]:
    """Autocast to ``dtype`` on ``device``'s type; nothing when ``dtype`` is None."""
    if dtype is None:
        yield
        return
    with torch.autocast(torch.device(device).type, dtype=dtype):
        yield


ChannelsLastSetting = bool | Literal["auto"]  # runtime.channels_last
NETWORKS = ("unet", "autoencoder", "classifier")
# The networks whose training step measured faster channels_last under bf16 autocast on a CPU with native
# bf16 (`python benchmarks/bench_precision.py step --only channels_last --rounds 3 --steps 2`, a quiet 2-core
# Intel Xeon with AMX; channels_last / contiguous, medians of alternating rounds): the classifier 0.84 (0.82
# over 5 rounds), the bare U-Net step 1.02, the project's training loop 1.01, the autoencoder 1.50 (slower).
# Float32 stays contiguous under auto: it is the reference path (mixed_precision: no), the same numbers on
# every CPU.
CHANNELS_LAST_FASTER_BF16 = frozenset({"classifier"})
Module = TypeVar("Module", bound=nn.Module)


@dataclass(frozen=True)
class MemoryFormat:
    """Whether ``network`` runs channels_last, and why."""

    network: str
    channels_last: bool
    reason: str

    @property
    def torch_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def params(self) -> dict[str, str]:
        """What a stage logs to MLflow beside its own params."""
        return {f"runtime.memory_format.{self.network}": "channels_last" if self.channels_last else "contiguous",
                f"runtime.memory_format_reason.{self.network}": self.reason}

    def module(self, module: Module) -> Module:
        """``module`` with its 4-D weights in this format (in place, as ``nn.Module.to``)."""
        return module.to(memory_format=self.torch_format)

    def tensor(self, tensor: torch.Tensor) -> torch.Tensor:
        """A 4-D (B, C, H, W) input in this format; other tensors as they are."""
        return tensor.contiguous(memory_format=self.torch_format) if tensor.ndim == 4 else tensor


CONTIGUOUS = {network: MemoryFormat(network, False, "runtime.channels_last = false") for network in NETWORKS}


def choose_memory_format(setting: ChannelsLastSetting, network: str, device: torch.device | str,
                         precision: torch.dtype | None, cpuinfo: str | None = None) -> MemoryFormat:
    """The memory format of ``network`` (one of NETWORKS) on ``device`` under autocast to ``precision``
    (None: float32) for ``runtime.channels_last`` = ``setting``. ``cpuinfo`` replaces /proc/cpuinfo's
    text (tests)."""
    if network not in NETWORKS:
        raise ValueError(f"unknown network {network!r}; expected one of {', '.join(NETWORKS)}")
    if setting is True or setting is False:
        return MemoryFormat(network, setting, f"runtime.channels_last = {str(setting).lower()}")
    if setting != "auto":
        raise ValueError(f"runtime.channels_last: {setting!r} is not one of auto, true, false")
    device, name = torch.device(device), PRECISION_NAMES.get(precision, str(precision))
    if device.type == "cuda":
        if precision is None:
            return MemoryFormat(network, False, "cuda in float32: channels_last pays under autocast (tensor cores)")
        return MemoryFormat(network, True, f"cuda under {name} autocast: tensor cores run channels_last convs")
    if device.type != "cpu":
        return MemoryFormat(network, False, f"not measured on {device.type}")
    if precision is None:
        return MemoryFormat(network, False, "cpu in float32: kept contiguous, the reference path")
    native, why = native_bf16(cpuinfo)
    if precision != torch.bfloat16 or not native:
        return MemoryFormat(network, False, f"not measured under {name} on this cpu ({why})")
    faster = network in CHANNELS_LAST_FASTER_BF16
    return MemoryFormat(network, faster, f"{network} under bf16 on a cpu with native bf16 ({why}): channels_last "
                                         f"measured {'faster' if faster else 'not faster'}")
