import numpy as np
import pytest
import torch

from cxrsynth.models.autoencoder import (
    AutoencoderConfig,
    FeaturePerceptualLoss,
    build_autoencoder,
    build_discriminator,
    kl_divergence,
)
from cxrsynth.tasks.autoencoder.fidelity import (
    lesion_contrast,
    lesion_fidelity,
    lesions_of,
    reconstruct,
    reconstruction_fidelity,
)
from cxrsynth.tasks.autoencoder.grid import grid_indices, reconstruction_grid
from cxrsynth.tasks.findings import FINDINGS

SMALL = AutoencoderConfig(downsampling=4, latent_channels=2, base_channels=8)


@pytest.mark.parametrize("factor, levels", [(1, 1), (2, 2), (4, 3), (8, 4)])
def test_downsampling_sets_the_levels_and_the_latent_grid(factor, levels):
    config = AutoencoderConfig(downsampling=factor, latent_channels=3, base_channels=8)
    assert len(config.channels) == levels
    with torch.no_grad():
        z_mu, _ = build_autoencoder(config).encode(torch.zeros(1, 1, 32, 32))
    assert z_mu.shape == (1, 3, 32 // factor, 32 // factor)


def test_downsampling_must_be_a_power_of_two():
    with pytest.raises(ValueError, match="power of two"):
        AutoencoderConfig(downsampling=3)


def test_kl_is_zero_for_the_prior_and_positive_elsewhere():
    mu, sigma = torch.zeros(2, 3, 4, 4), torch.ones(2, 3, 4, 4)
    assert float(kl_divergence(mu, sigma)) == pytest.approx(0.0)
    # one element off by mu = 1: 0.5 * 1 per image
    shifted = mu.clone()
    shifted[:, 0, 0, 0] = 1
    assert float(kl_divergence(shifted, sigma)) == pytest.approx(0.5)


def test_discriminator_scores_patches():
    logits = build_discriminator(channels=8, layers=2)(torch.zeros(2, 1, 32, 32))[-1]
    assert logits.shape[0] == 2 and logits.shape[1] == 1 and logits.shape[-1] > 1


def test_perceptual_loss_is_zero_on_equal_images_and_grows_with_difference():
    network = torch.nn.Conv2d(1, 4, 3, padding=1)
    loss = FeaturePerceptualLoss(network)
    image = torch.rand(1, 1, 16, 16)
    assert float(loss(image, image)) == pytest.approx(0.0, abs=1e-7)
    assert float(loss(image + 0.5 * torch.rand_like(image), image)) > 0
    assert not any(parameter.requires_grad for parameter in loss.parameters())


def disc_with_lesion(size=32, value=0.8, background=0.3, radius=3):
    yy, xx = np.mgrid[:size, :size]
    mask = (yy - size // 2) ** 2 + (xx - size // 2) ** 2 <= radius**2
    image = np.full((size, size), background, np.float32)
    image[mask] = value
    return image, mask


def test_lesion_contrast_is_inside_minus_ring():
    image, mask = disc_with_lesion()
    assert lesion_contrast(image, mask) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        lesion_contrast(image, np.zeros_like(mask))


def test_lesion_contrast_leaves_out_the_excluded_pixels():
    image, mask = disc_with_lesion()
    neighbour = np.zeros_like(mask)
    neighbour[16, 12:14] = True  # a bright pixel pair of another lesion, inside the first one's ring
    image[neighbour] = 0.8
    assert lesion_contrast(image, mask) < 0.5
    assert lesion_contrast(image, mask, exclude=mask | neighbour) == pytest.approx(0.5)


def test_lesions_of_splits_a_mask_into_its_connected_lesions_largest_first():
    mask = np.zeros((16, 16), bool)
    mask[1:3, 1:3] = True
    mask[8:13, 8:13] = True
    mask[13, 13] = True  # touches the big one diagonally: the same lesion
    lesions = lesions_of(mask)
    assert [int(lesion.sum()) for lesion in lesions] == [26, 4]
    assert not lesions_of(np.zeros((4, 4), bool))


def test_lesion_fidelity_scores_each_lesion_of_an_image():
    image, big = disc_with_lesion(radius=4)
    small = np.zeros_like(big)
    small[3:5, 3:5] = True
    image[small] = 0.8
    masks = np.zeros((1, len(FINDINGS), *image.shape), np.uint8)
    masks[0, FINDINGS.index("nodule")] = big | small
    small_lost = image.copy()
    small_lost[small] = 0.3  # the reconstruction keeps the big nodule and loses the small one
    result = lesion_fidelity(image[None], small_lost[None], masks, ["nodule"])["nodule"]
    assert result["n_images"] == 1 and result["n_lesions"] == 2
    assert result["contrast_before"] == pytest.approx(0.5) and result["contrast_kept"] == pytest.approx(0.5)


def test_lesion_fidelity_sees_a_lesion_vanish():
    image, mask = disc_with_lesion()
    masks = np.zeros((1, len(FINDINGS), *image.shape), np.uint8)
    masks[0, FINDINGS.index("nodule")] = mask
    erased = np.full_like(image, 0.3)
    kept = lesion_fidelity(image[None], image[None], masks, ["nodule", "pneumothorax"])
    lost = lesion_fidelity(image[None], erased[None], masks, ["nodule"])
    assert kept["nodule"]["contrast_kept"] == pytest.approx(1.0) and kept["nodule"]["crop_ssim"] == pytest.approx(1.0, abs=1e-3)
    assert kept["nodule"]["n_images"] == kept["nodule"]["n_lesions"] == 1
    assert kept["pneumothorax"]["n_lesions"] == 0 and kept["pneumothorax"]["crop_ssim"] is None
    assert lost["nodule"]["contrast_kept"] == pytest.approx(0.0, abs=1e-6) and lost["nodule"]["crop_ssim"] < 0.7


def test_reconstruction_fidelity_of_an_autoencoder_runs_on_images_in_unit_range():
    torch.manual_seed(0)
    images = np.random.default_rng(0).random((3, 32, 32)).astype(np.float32)
    out = reconstruct(build_autoencoder(SMALL), images, batch_size=2)
    assert out.shape == images.shape and out.min() >= 0 and out.max() <= 1
    report = reconstruction_fidelity(images, out, np.zeros((3, len(FINDINGS), 32, 32), np.uint8), ["nodule"])
    assert report["image"]["n_pairs"] == 3 and report["lesions"]["nodule"]["n_lesions"] == 0


def test_model_folder_round_trips_and_refuses_a_mismatched_config(tmp_path):
    import json

    from cxrsynth.tasks.autoencoder.model_io import load_autoencoder, save_autoencoder

    torch.manual_seed(0)
    autoencoder = build_autoencoder(SMALL)
    save_autoencoder(tmp_path, autoencoder, SMALL)
    loaded, config = load_autoencoder(tmp_path)
    assert config == SMALL
    assert all(torch.equal(a, b) for a, b in zip(autoencoder.state_dict().values(), loaded.state_dict().values()))
    assert not any(p.requires_grad for p in loaded.parameters())

    (tmp_path / "config.json").write_text(json.dumps({**json.loads((tmp_path / "config.json").read_text()), "latent_channels": 4}))
    with pytest.raises(ValueError, match="digest differs"):
        load_autoencoder(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"latent_chanels": 4}))
    with pytest.raises(ValueError, match="latent_chanels"):
        load_autoencoder(tmp_path)


def test_grid_shows_one_image_per_finding_first_then_the_rest():
    masks = np.zeros((5, len(FINDINGS), 8, 8), bool)
    masks[3, FINDINGS.index("nodule"), 2, 2] = True
    masks[3, FINDINGS.index("pneumothorax"), 4, 4] = True
    masks[1, FINDINGS.index("pneumothorax"), 4, 4] = True
    # pneumothorax (before nodule in FINDINGS) takes image 1; nodule's only image, 3, is still free
    assert grid_indices(masks, 4) == [1, 3, 0, 2]
    assert grid_indices(masks, 1) == [1]
    assert grid_indices(masks, 9) == [1, 3, 0, 2, 4]


def test_reconstruction_grid_has_a_real_a_decoded_and_a_difference_row_with_lesions_outlined():
    image, mask = disc_with_lesion()
    masks = np.zeros((2, len(FINDINGS), *image.shape), bool)
    masks[0, FINDINGS.index("nodule")] = mask
    real = np.stack([image, image])
    grid = reconstruction_grid(real, real * 0.5, masks, [0, 1])
    assert grid.ndim == 3 and grid.shape[2] == 3
    red = (grid[..., 0] == 255) & (grid[..., 1] == 40)
    assert red.any()
    # three rows of enlarged tiles, the first image's column outlined in every row
    rows_with_red = np.flatnonzero(red.any(axis=1))
    assert rows_with_red.max() - rows_with_red.min() > 2 * grid.shape[0] // 3
    with pytest.raises(ValueError):
        reconstruction_grid(real, real, masks, [])
