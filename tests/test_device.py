import pytest
import torch

from cxrsynth.tasks import classifier
from cxrsynth.tasks.device import resolve_device


def test_device_settings():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if torch.cuda.is_available():
        assert resolve_device("cuda") == torch.device("cuda")
    else:
        with pytest.raises(ValueError, match="runtime.device is 'cuda' but no CUDA device"):
            resolve_device("cuda")
    assert classifier.resolve_device is resolve_device  # one function, whichever way a flow imports it
