import pytest
import torch

from cxrsynth.tasks import classifier, device
from cxrsynth.tasks.device import (
    CONTIGUOUS,
    NETWORKS,
    MemoryFormat,
    Precision,
    autocast,
    autocast_dtype,
    choose_memory_format,
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


def _channels_last(setting, network, device="cpu", precision=torch.bfloat16, cpuinfo=XEON) -> bool:
    return choose_memory_format(setting, network, torch.device(device), precision, cpuinfo).channels_last


def test_channels_last_auto_on_a_cpu_follows_what_measured_faster_under_native_bf16(monkeypatch):
    assert _channels_last("auto", "classifier") and _channels_last("auto", "classifier", cpuinfo=ZEN4)
    assert not _channels_last("auto", "unet") and not _channels_last("auto", "autoencoder")  # no gain measured
    layout = choose_memory_format("auto", "autoencoder", CPU, torch.bfloat16, XEON)
    assert "not faster" in layout.reason and "amx_bf16" in layout.reason
    monkeypatch.setattr(device, "CHANNELS_LAST_FASTER_BF16", frozenset({"unet"}))  # the table decides
    assert _channels_last("auto", "unet") and not _channels_last("auto", "classifier")


def test_channels_last_auto_keeps_float32_and_emulated_bf16_contiguous():
    for network in NETWORKS:
        assert not _channels_last("auto", network, precision=None)
        assert not _channels_last("auto", network, cpuinfo=AVX512_ONLY)  # bf16 emulated: not measured
        assert not _channels_last("auto", network, cpuinfo=NO_FLAGS)
    assert "float32" in choose_memory_format("auto", "unet", CPU, None, XEON).reason
    assert "not measured" in choose_memory_format("auto", "unet", CPU, torch.bfloat16, AVX512_ONLY).reason


def test_channels_last_auto_on_cuda_under_autocast_only():
    for network in NETWORKS:
        assert _channels_last("auto", network, "cuda", torch.float16)
        assert _channels_last("auto", network, "cuda", torch.bfloat16)
        assert not _channels_last("auto", network, "cuda", None)
    assert not _channels_last("auto", "unet", "mps")


def test_channels_last_true_and_false_are_obeyed_everywhere():
    for device_name, precision, cpuinfo in (("cpu", None, NO_FLAGS), ("cpu", torch.bfloat16, XEON), ("cuda", None, XEON)):
        assert _channels_last(True, "autoencoder", device_name, precision, cpuinfo)
        assert not _channels_last(False, "classifier", device_name, precision, cpuinfo)
    assert choose_memory_format(True, "unet", CPU, None).reason == "runtime.channels_last = true"


def test_channels_last_refuses_unknown_settings_and_networks():
    with pytest.raises(ValueError, match=r"runtime\.channels_last: 'yes' is not one of auto, true, false"):
        choose_memory_format("yes", "unet", CPU, None)
    with pytest.raises(ValueError, match="unknown network 'vae'"):
        choose_memory_format("auto", "vae", CPU, None)


def test_memory_format_converts_modules_and_four_d_inputs_and_names_itself():
    on, off = MemoryFormat("unet", True, "why"), CONTIGUOUS["unet"]
    conv = on.module(torch.nn.Conv2d(3, 4, 3))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous()
    assert off.module(conv).weight.is_contiguous()
    image, vector = torch.randn(2, 3, 5, 5), torch.randn(2, 3)
    assert on.tensor(image).is_contiguous(memory_format=torch.channels_last) and not on.tensor(image).is_contiguous()
    assert on.tensor(vector) is vector
    assert torch.equal(on.tensor(image), image)
    assert on.params() == {"runtime.memory_format.unet": "channels_last", "runtime.memory_format_reason.unet": "why"}
    assert off.params()["runtime.memory_format.unet"] == "contiguous"
