import math

import pytest
import torch

from cxrsynth.models.classifier import FindingClassifier, build_classifier, known_labels, masked_bce
from cxrsynth.tasks.findings import FINDINGS

torch.set_num_threads(1)


@pytest.mark.parametrize("architecture, size", [("densenet_small", 64), ("densenet_small", 32), ("densenet_small_stride2", 64),
                                                ("densenet_small_stride2", 32), ("densenet121", 64)])
def test_interface_shapes(architecture, size):
    torch.manual_seed(0)
    model = build_classifier(architecture).eval()
    assert isinstance(model, FindingClassifier) and model.architecture == architecture
    images = torch.rand(2, 1, size, size)
    with torch.no_grad():
        logits, features = model(images), model.features(images)
    assert logits.shape == (2, len(FINDINGS))
    assert features.shape == (2, model.feature_dim) and isinstance(model.feature_dim, int)
    # the logits are the last linear layer applied to exactly these features
    assert torch.allclose(model.network.class_layers.out(features), logits, atol=1e-6)


def _first_dense_block_input(model: FindingClassifier, size: int) -> tuple[int, ...]:
    """The shape of the maps the stem hands to the first dense block."""
    seen = []
    block = model.network.features.denseblock1
    handle = block.register_forward_pre_hook(lambda module, inputs: seen.append(tuple(inputs[0].shape)))
    with torch.no_grad():
        model.eval()(torch.rand(1, 1, size, size))
    handle.remove()
    return seen[0]


def test_stride2_stem_keeps_small_lesion_maps():
    # at 64 px a 10-30 mm nodule is 2-5 px: a quarter-size map (16 x 16) leaves it about one cell
    assert _first_dense_block_input(build_classifier("densenet_small"), 64)[2:] == (16, 16)
    assert _first_dense_block_input(build_classifier("densenet_small_stride2"), 64)[2:] == (32, 32)
    # the same dense blocks and widths: the stem alone differs, so the weights are the same in number
    small, stride2 = (sum(p.numel() for p in build_classifier(a).parameters()) for a in ("densenet_small", "densenet_small_stride2"))
    assert small == stride2


def test_small_network_is_small_and_unknown_architecture_is_named():
    parameters = sum(p.numel() for p in build_classifier("densenet_small").parameters())
    assert parameters < 500_000 < sum(p.numel() for p in build_classifier("densenet121").parameters())
    with pytest.raises(ValueError, match="unknown classifier architecture 'resnet'"):
        build_classifier("resnet")


def test_masked_loss_ignores_unknown_labels():
    nan = math.nan
    labels = torch.tensor([[1.0, nan, 0.0], [nan, -1.0, 1.0]])
    logits = torch.tensor([[2.0, 5.0, -1.0], [-7.0, 3.0, 0.5]], requires_grad=True)
    loss = masked_bce(logits, labels)
    known = known_labels(labels)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits[known], labels[known])
    assert torch.isfinite(loss) and torch.allclose(loss, expected)
    loss.backward()
    assert (logits.grad[~known] == 0).all() and (logits.grad[known] != 0).all()
    # no known label at all: zero loss, not NaN
    assert masked_bce(logits, torch.full_like(labels, nan)).item() == 0.0


def test_pos_weight_raises_the_loss_of_positives_only():
    labels = torch.tensor([[1.0, 0.0]])
    logits = torch.zeros(1, 2)
    plain = masked_bce(logits, labels)
    weighted = masked_bce(logits, labels, pos_weight=torch.tensor([3.0, 3.0]))
    # BCE of logit 0 is log 2 per entry; the positive entry counts three times
    assert torch.allclose(plain, torch.tensor(math.log(2)))
    assert torch.allclose(weighted, torch.tensor(4 * math.log(2) / 2))
