import pytest
import torch

from cxrsynth.models.losses import CleanEstimate, bounding_regions, lesion_mse, lesion_preserving_loss, lesion_ssim_loss


def _batch(lesion_pixels=True):
    torch.manual_seed(0)
    prediction = torch.randn(2, 1, 16, 16, requires_grad=True)
    target = torch.randn(2, 1, 16, 16)
    lesion = torch.zeros(2, 1, 16, 16)
    if lesion_pixels:
        lesion[0, 0, 4:8, 5:9] = 1
    return prediction, target, lesion


def test_lesion_term_is_zero_without_lesions_and_total_is_plain_mse():
    prediction, target, lesion = _batch(lesion_pixels=False)
    parts = lesion_preserving_loss(prediction, target, lesion, lesion_weight=2.0, ssim_weight=0.0)
    assert parts["lesion"].item() == 0
    assert torch.isclose(parts["loss"], (prediction - target).pow(2).mean())


def test_lesion_term_ignores_pixels_outside_masks():
    prediction, target, lesion = _batch()
    changed = prediction.detach().clone()
    changed[lesion == 0] += 5.0  # only outside the lesion
    assert torch.isclose(lesion_mse(prediction, target, lesion), lesion_mse(changed, target, lesion))


def test_lesion_weight_changes_the_gradient_inside_masks_only():
    prediction, target, lesion = _batch()
    gradients = []
    for weight in (0.0, 2.0):
        prediction.grad = None
        lesion_preserving_loss(prediction, target, lesion, lesion_weight=weight, ssim_weight=0.0)["loss"].backward()
        gradients.append(prediction.grad.clone())
    difference = (gradients[1] - gradients[0]).abs()
    assert difference[lesion == 0].max() == 0
    assert (difference[lesion == 1] > 0).all()


def test_bounding_regions_are_boxes_around_lesions():
    lesion = torch.zeros(2, 1, 10, 10)
    lesion[0, 0, 2, 3] = lesion[0, 0, 5, 7] = 1
    region = bounding_regions(lesion)
    assert region[0, 0].sum() == 4 * 5 and region[0, 0, 2:6, 3:8].all()
    assert region[1].sum() == 0


def test_ssim_term_is_zero_for_a_perfect_prediction_and_grows_with_error():
    _, _, lesion = _batch()
    clean = torch.rand(2, 1, 16, 16) * 2 - 1
    assert lesion_ssim_loss(clean, clean, lesion).abs().item() < 1e-5
    noisy = clean + 0.5 * torch.randn_like(clean)
    assert lesion_ssim_loss(noisy, clean, lesion).item() > 0.1


def test_ssim_term_only_sees_the_lesion_box_and_its_weight():
    _, _, lesion = _batch()
    clean = torch.rand(2, 1, 16, 16) * 2 - 1
    far = clean.clone()
    far[..., 12:, 12:] += 1.0  # more than a window away from the box
    assert lesion_ssim_loss(far, clean, lesion).abs().item() < 1e-5
    noisy = clean + 0.5 * torch.randn_like(clean)
    full = lesion_ssim_loss(noisy, clean, lesion)
    assert torch.isclose(lesion_ssim_loss(noisy, clean, lesion, torch.tensor([0.25, 1.0])), 0.25 * full)


def test_zero_weights_turn_terms_off_and_ssim_needs_x0():
    prediction, target, lesion = _batch()
    parts = lesion_preserving_loss(prediction, target, lesion, 0.0, 0.0)
    assert parts["lesion"] == 0 and parts["ssim"] == 0
    with pytest.raises(ValueError, match="clean-image estimate"):
        lesion_preserving_loss(prediction, target, lesion, 0.0, 0.5)
    with_ssim = lesion_preserving_loss(prediction, target, lesion, 0.0, 0.5, CleanEstimate(prediction, target))
    assert with_ssim["ssim"] > 0 and with_ssim["loss"] > parts["loss"]
