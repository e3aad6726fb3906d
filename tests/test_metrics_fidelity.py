import numpy as np
import pytest
from torch import nn

from cxrsynth.tasks.metrics.features import FeatureNetwork
from cxrsynth.tasks.metrics.fidelity import fid_kid, paired_ssim_psnr


@pytest.fixture(scope="module")
def network():
    # A fixed radiograph-free feature map: 4x4 average pooling of a 16x16 image, 16 features.
    return FeatureNetwork(nn.Sequential(nn.AvgPool2d(4), nn.Flatten()), 16, "pooled pixels")


def test_same_set_is_zero_and_shifted_set_is_not(network):
    rng = np.random.default_rng(0)
    real = rng.random((48, 16, 16)).astype(np.float32)
    same = fid_kid(network, real, real, seed=0)
    assert same["fid"] == pytest.approx(0, abs=1e-6)
    assert abs(same["kid_mean"]) < 1e-2
    shifted = fid_kid(network, real, np.clip(real + 0.3, 0, 1), seed=0)
    assert shifted["fid"] > 0.5 and shifted["kid_mean"] > 0.1
    assert fid_kid(network, real, np.clip(real + 0.3, 0, 1), seed=0) == shifted  # seeded KID subsets
    assert fid_kid(network, real, real[:1], seed=0)["fid"] is None


def test_paired_ssim_psnr():
    rng = np.random.default_rng(1)
    images = rng.random((4, 24, 24)).astype(np.float32)
    identical = paired_ssim_psnr(images, images)
    assert identical["ssim"] == pytest.approx(1.0) and identical["n_pairs"] == 4
    noisy = paired_ssim_psnr(images, np.clip(images + rng.normal(0, 0.1, images.shape), 0, 1))
    assert noisy["ssim"] < 0.95 and 15 < noisy["psnr"] < 25
    assert paired_ssim_psnr(images[:0], images[:0]) == {"n_pairs": 0, "ssim": None, "psnr": None}
