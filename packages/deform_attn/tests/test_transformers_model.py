"""A transformers DeformableDetrModel (small config, random weights, eval mode) run once with
its own pure-PyTorch multi-scale deformable attention and once with detops' op swapped into
every encoder and decoder attention layer: the same outputs, and the same gradients of the
input image. transformers is a test requirement only (tools/requirements-dev.txt)."""

import pytest
import torch

import detops_deform_attn

transformers = pytest.importorskip("transformers", reason="transformers is not installed (tools/requirements-dev.txt)")
# With transformers installed, the model must be there: a plain import fails loudly if not.
import transformers.models.deformable_detr.modeling_deformable_detr as modeling  # noqa: E402


class DetopsAttention(torch.nn.Module):
    """transformers' MultiScaleDeformableAttention kernel interface, on the detops op."""

    def forward(
        self,
        value,
        value_spatial_shapes,
        value_spatial_shapes_list,
        level_start_index,
        sampling_locations,
        attention_weights,
        im2col_step,
    ):
        return detops_deform_attn.multi_scale_deformable_attention(
            value, value_spatial_shapes, sampling_locations, attention_weights, level_start_index
        )


def _model():
    backbone = transformers.ResNetConfig(
        embedding_size=8, hidden_sizes=[8, 16, 16, 16], depths=[1, 1, 1, 1], out_features=["stage2", "stage3", "stage4"]
    )
    config = transformers.DeformableDetrConfig(
        backbone_config=backbone,
        use_timm_backbone=False,
        use_pretrained_backbone=False,
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        num_queries=20,
        num_feature_levels=4,
        encoder_n_points=3,
        decoder_n_points=2,
        dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
    )
    torch.manual_seed(0)
    return modeling.DeformableDetrModel(config).eval()


def _swap(model) -> int:
    swapped = 0
    for module in model.modules():
        if isinstance(module, modeling.DeformableDetrMultiscaleDeformableAttention):
            module.attn = DetopsAttention()
            swapped += 1
    return swapped


def _run(model, pixels):
    pixels = pixels.clone().requires_grad_()
    out = model(pixel_values=pixels)
    hidden = out.last_hidden_state
    (grad,) = torch.autograd.grad((hidden * torch.cos(torch.arange(hidden.numel()).view(hidden.shape))).sum(), pixels)
    return out, grad


@pytest.mark.whole_model
def test_deformable_detr_model_with_detops_attention():
    model = _model()
    pixels = torch.randn(2, 3, 96, 80, generator=torch.Generator().manual_seed(1))
    expected, expected_grad = _run(model, pixels)
    assert _swap(model) == 4  # two encoder and two decoder layers
    got, grad = _run(model, pixels)
    for name in ("last_hidden_state", "encoder_last_hidden_state", "init_reference_points"):
        torch.testing.assert_close(getattr(got, name), getattr(expected, name), rtol=1e-4, atol=1e-5, msg=name)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-4, atol=1e-5)
