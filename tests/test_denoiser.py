import pytest
import torch

from cxrsynth.models.condition_encoders import LabelEncoder, LearnedTextEncoder, PretrainedTextEncoder
from cxrsynth.models.conditioning import N_STATES, Conditions, concatenate
from cxrsynth.models.denoiser import ConditionalDenoiser, EncodedConditions, UNetShape
from tests.diffusion_data import save_tiny_bert

F, SIZE, TOKENS, DIM = 6, 16, 8, 16


def _conditions(batch=3, keep=True):
    generator = torch.Generator().manual_seed(0)
    flags = torch.full((batch,), keep)
    ids = torch.randint(2, 10, (batch, TOKENS), generator=generator)
    ids[:, 5:] = 0
    return Conditions(
        states=torch.randint(0, N_STATES, (batch, F), generator=generator),
        laterality=torch.randint(0, 4, (batch, F), generator=generator),
        severity=torch.randint(0, 4, (batch, F), generator=generator),
        masks=(torch.rand(batch, F, SIZE, SIZE, generator=generator) > 0.9).float(),
        text_ids=ids, text_attention=ids != 0, keep_label=flags.clone(), keep_mask=flags.clone(), keep_text=flags.clone(),
    )


def _denoiser(conditions=("label", "mask", "text")):
    torch.manual_seed(0)
    text = LearnedTextEncoder(vocab_size=12, max_tokens=TOKENS, width=16, layers=1, out_dim=DIM)
    model = ConditionalDenoiser(F, DIM, UNetShape((8, 16), (False, True), 1, 8, 4), conditions, text)
    with torch.no_grad():  # MONAI zero-initialises output and attention projections: make every path live
        for parameter in model.parameters():
            if parameter.abs().sum() == 0:
                parameter.normal_(0, 0.1)
    return model


def test_keeping_and_dropping_conditions():
    cond = _conditions()
    only_mask = cond.keeping(("mask",))
    assert only_mask.keep_mask.all() and not only_mask.keep_label.any() and not only_mask.keep_text.any()
    assert not cond.dropped().keep_mask.any()
    assert len(concatenate([cond, cond.dropped()])) == 6
    with pytest.raises(ValueError, match="unknown condition names"):
        cond.keeping(("labels",))


def test_label_encoder_uses_null_tokens_for_dropped_labels_and_sees_every_attribute():
    encoder = LabelEncoder(F, DIM)
    cond = _conditions()
    kept = encoder(cond.states, cond.laterality, cond.severity, cond.keep_label)
    dropped = encoder(cond.states, cond.laterality, cond.severity, torch.zeros(3, dtype=torch.bool))
    assert kept.shape == (3, F, DIM)
    assert torch.equal(dropped[0], encoder.null) and torch.equal(dropped[0], dropped[1])
    for changed in ("states", "laterality", "severity"):
        values = getattr(cond, changed).clone()
        values[0, 2] = (values[0, 2] + 1) % 4
        args = {"states": cond.states, "laterality": cond.laterality, "severity": cond.severity, changed: values}
        other = encoder(args["states"], args["laterality"], args["severity"], cond.keep_label)
        assert not torch.allclose(other[0, 2], kept[0, 2]) and torch.allclose(other[0, 3], kept[0, 3])


def test_learned_text_encoder_ignores_padding_and_handles_empty_text():
    encoder = LearnedTextEncoder(vocab_size=12, max_tokens=TOKENS, width=16, layers=1, out_dim=DIM).eval()
    cond = _conditions()
    tokens = encoder(cond.text_ids, cond.text_attention, cond.keep_text)
    assert tokens.shape == (3, TOKENS, DIM) and (tokens[:, 5:] == 0).all()
    empty = torch.zeros(1, TOKENS, dtype=torch.long)
    null = encoder(empty, empty != 0, torch.tensor([False]))
    assert torch.isfinite(null).all() and torch.equal(null[0], encoder.null)


def test_pretrained_text_encoder_is_frozen_and_projected(tmp_path):
    from transformers import AutoModel

    backbone = AutoModel.from_pretrained(str(save_tiny_bert(tmp_path / "bert")), local_files_only=True)
    encoder = PretrainedTextEncoder(backbone, 16, TOKENS, DIM).train()
    cond = _conditions()
    tokens = encoder(cond.text_ids, cond.text_attention, cond.keep_text)
    tokens.sum().backward()
    assert tokens.shape == (3, TOKENS, DIM) and not backbone.training
    assert all(p.grad is None for p in backbone.parameters())
    assert encoder.project[1].weight.grad is not None


def test_denoiser_output_shape_and_each_condition_changes_it():
    model = _denoiser().eval()
    noisy, timesteps, cond = torch.randn(3, 1, SIZE, SIZE), torch.tensor([1, 20, 40]), _conditions()
    full = model(noisy, timesteps, cond)
    assert full.shape == (3, 1, SIZE, SIZE)
    for name in ("label", "mask", "text"):
        kept = tuple(n for n in ("label", "mask", "text") if n != name)
        assert not torch.allclose(model(noisy, timesteps, cond.keeping(kept)), full), name


def test_conditions_encoded_once_give_the_same_output_as_encoding_them_in_the_call():
    model = _denoiser().eval()
    noisy, timesteps, cond = torch.randn(3, 1, SIZE, SIZE), torch.tensor([1, 20, 40]), _conditions()
    encoded = model.encode(cond)
    assert isinstance(encoded, EncodedConditions)
    assert encoded.context.shape == (3, 1 + F + TOKENS, DIM) and encoded.channels.shape == (3, F + 1, SIZE, SIZE)
    with torch.no_grad():
        assert torch.equal(model(noisy, timesteps, encoded), model(noisy, timesteps, cond))
        assert not torch.equal(model(noisy, timesteps, model.encode(cond.dropped())), model(noisy, timesteps, cond))


def test_mask_channels_zero_when_dropped_and_indicator_marks_a_given_mask():
    model = _denoiser()
    cond = _conditions()
    channels = model.mask_channels(cond.keeping(("label",)), torch.zeros(3, 1, SIZE, SIZE))
    assert channels.shape == (3, F + 1, SIZE, SIZE) and channels.abs().sum() == 0
    given = model.mask_channels(cond, torch.zeros(3, 1, SIZE, SIZE))
    assert (given[:, -1] == 1).all() and torch.equal(given[:, :F], cond.masks)


def test_a_model_without_a_condition_ignores_it():
    model = _denoiser(("mask",)).eval()
    noisy, timesteps, cond = torch.randn(3, 1, SIZE, SIZE), torch.tensor([1, 20, 40]), _conditions()
    assert model.label_encoder is None and model.text_encoder is None
    assert torch.allclose(model(noisy, timesteps, cond), model(noisy, timesteps, cond.keeping(("mask",))))
    with pytest.raises(ValueError, match="needs a text encoder"):
        ConditionalDenoiser(F, DIM, UNetShape((8, 16), (False, True), 1, 8, 4), ("text",), None)
