import pytest
import torch

from cxrsynth.tasks import classifier
from cxrsynth.tasks.device import autocast_dtype, resolve_device


def test_device_settings():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if torch.cuda.is_available():
        assert resolve_device("cuda") == torch.device("cuda")
    else:
        with pytest.raises(ValueError, match="runtime.device is 'cuda' but no CUDA device"):
            resolve_device("cuda")
    assert classifier.resolve_device is resolve_device  # one function, whichever way a flow imports it


def test_mixed_precision_is_for_cuda_only():
    assert autocast_dtype("auto", torch.device("cpu")) is None
    assert autocast_dtype("bf16", torch.device("cpu")) is None
    assert autocast_dtype("no", torch.device("cuda")) is None
    assert autocast_dtype("fp16", torch.device("cuda")) == torch.float16
    assert autocast_dtype("bf16", torch.device("cuda")) == torch.bfloat16
