import numpy as np
import pytest
import torch
from torch import nn

from cxrsynth.models.classifier import build_classifier
from cxrsynth.tasks.metrics.features import classifier_features, extract_features, load_feature_network


def test_classifier_features_wraps_penultimate_layer():
    torch.manual_seed(0)
    model = build_classifier("densenet_small").eval()
    network = classifier_features(model)
    images = np.random.default_rng(0).random((5, 16, 16)).astype(np.float32)
    features = extract_features(network, images, batch_size=2)
    assert network.num_features == model.feature_dim and features.shape == (5, model.feature_dim)
    with torch.no_grad():
        expected = model.features(torch.from_numpy(images)[:, None]).numpy()
    assert np.allclose(features, expected, atol=1e-6)


def test_torchscript_feature_network(tmp_path):
    torch.manual_seed(0)
    tiny = nn.Sequential(nn.Conv2d(1, 3, 3), nn.AdaptiveAvgPool2d(2), nn.Flatten())
    torch.jit.save(torch.jit.script(tiny), str(tmp_path / "net.pt"))
    network = load_feature_network(tmp_path / "net.pt", image_size=16)
    assert network.num_features == 12
    assert extract_features(network, np.zeros((3, 16, 16), np.float32)).shape == (3, 12)


def test_densenet_state_dict_feature_network(tmp_path):
    from monai.networks.nets import DenseNet121

    torch.save(DenseNet121(spatial_dims=2, in_channels=3, out_channels=2).state_dict(), tmp_path / "dn.pt")
    network = load_feature_network(tmp_path / "dn.pt", image_size=32)
    assert network.num_features == 1024
    assert extract_features(network, np.random.default_rng(0).random((2, 32, 32))).shape == (2, 1024)


def test_bad_feature_network_files(tmp_path):
    with pytest.raises(ValueError, match="is not a file"):
        load_feature_network(tmp_path / "missing.pt", 16)
    torch.save({"weight": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a MONAI DenseNet121 state dict"):
        load_feature_network(tmp_path / "other.pt", 16)
    (tmp_path / "junk.pt").write_text("not a network")
    with pytest.raises(ValueError, match="neither TorchScript nor a state dict"):
        load_feature_network(tmp_path / "junk.pt", 16)
