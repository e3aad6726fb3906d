import pytest
import torch

from cxrsynth.tasks import classifier
from cxrsynth.tasks.device import (
    Precision,
    autocast,
    autocast_dtype,
    choose_precision,
    cpu_flags,
    describe_cpu,
    native_bf16,
    precision_params,
    resolve_device,
)

CPU = torch.device("cpu")
XEON = "processor\t: 0\nmodel name\t: Intel(R) Xeon(R)\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
ZEN4 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_bf16\n"
AVX512_ONLY = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw avx512vl avx512dq\n"
NO_FLAGS = ""


def test_device_settings():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if torch.cuda.is_available():
        assert resolve_device("cuda") == torch.device("cuda")
    else:
        with pytest.raises(ValueError, match="runtime.device is 'cuda' but no CUDA device"):
            resolve_device("cuda")
    assert classifier.resolve_device is resolve_device  # one function, whichever way a flow imports it


def test_cpu_flags_come_from_the_flags_line():
    assert {"avx512_bf16", "amx_bf16", "amx_tile"} <= cpu_flags(XEON)
    assert "avx512_bf16" not in cpu_flags(AVX512_ONLY)
    assert cpu_flags(NO_FLAGS) == frozenset()


def test_native_bf16_names_the_flags_or_their_absence():
    assert native_bf16(XEON) == (True, "cpu flags amx_bf16,avx512_bf16")
    assert native_bf16(ZEN4) == (True, "cpu flags avx512_bf16")
    supported, why = native_bf16(AVX512_ONLY)
    assert not supported and "amx_bf16" in why and "avx512_bf16" in why
    supported, why = native_bf16(NO_FLAGS)
    assert not supported and "/proc/cpuinfo" in why


def test_auto_on_a_cpu_is_bf16_with_native_support_else_float32():
    assert choose_precision("auto", CPU, cpuinfo=XEON) == Precision(torch.bfloat16, "cpu flags amx_bf16,avx512_bf16")
    assert autocast_dtype("auto", CPU, cpuinfo=ZEN4) == torch.bfloat16
    assert autocast_dtype("auto", CPU, cpuinfo=AVX512_ONLY) is None
    assert autocast_dtype("auto", CPU, cpuinfo=NO_FLAGS) is None
    assert autocast_dtype("no", CPU, cpuinfo=XEON) is None


def test_bf16_on_a_cpu_is_allowed_and_says_when_it_is_emulated():
    assert autocast_dtype("bf16", CPU, cpuinfo=AVX512_ONLY) == torch.bfloat16
    assert "emulated" in choose_precision("bf16", CPU, cpuinfo=AVX512_ONLY).reason
    assert "emulated" not in choose_precision("bf16", CPU, cpuinfo=XEON).reason


def test_fp16_on_a_cpu_is_refused_naming_the_key():
    with pytest.raises(ValueError, match=r"classifier\.mixed_precision: fp16 autocast is for CUDA only"):
        autocast_dtype("fp16", CPU, "classifier.mixed_precision", cpuinfo=XEON)
    with pytest.raises(ValueError, match=r"diffusion\.train\.mixed_precision: 'fp8' is not one of"):
        autocast_dtype("fp8", CPU, "diffusion.train.mixed_precision")


def test_cuda_settings():
    cuda = torch.device("cuda")
    assert autocast_dtype("no", cuda) is None
    assert autocast_dtype("fp16", cuda) == torch.float16
    assert autocast_dtype("bf16", cuda) == torch.bfloat16
    if torch.cuda.is_available():
        assert autocast_dtype("auto", cuda) == (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)


def test_precision_params_name_the_choice_and_the_reason():
    assert Precision(torch.bfloat16, "cpu flags avx512_bf16").params() == {
        "runtime.precision": "bf16", "runtime.precision_reason": "cpu flags avx512_bf16"}
    logged = precision_params("no", "cpu", "classifier.mixed_precision")
    assert logged == {"runtime.precision": "fp32", "runtime.precision_reason": "classifier.mixed_precision = no"}
    assert precision_params("auto", "cpu")["runtime.precision"] in ("bf16", "fp32")  # this machine's flags decide


def test_autocast_runs_matmuls_in_the_dtype_or_leaves_float32():
    a = torch.randn(4, 4)
    with autocast(CPU, torch.bfloat16):
        assert (a @ a).dtype == torch.bfloat16
    with autocast(CPU, None):
        assert (a @ a).dtype == torch.float32


def test_describe_cpu_names_the_model_and_the_flags_speed_depends_on():
    text = describe_cpu("processor : 0\nmodel name : Some Xeon\nflags : fpu sse2 avx512f amx_bf16 amx_tile\n")
    assert text.startswith("Some Xeon; flags: amx_bf16 amx_tile avx512f;") and text.endswith("usable CPUs")
    assert "no AVX-512 / AMX" in describe_cpu("model name : Old\nflags : fpu sse2\n")
