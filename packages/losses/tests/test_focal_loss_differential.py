"""sigmoid_focal_loss against torchvision.ops.sigmoid_focal_loss (the contract) and the
float64 reference written from the definition: values and gradients of inputs and targets,
every reduction, alpha and gamma variants, dtypes, empty and adversarial inputs, float64
gradcheck, and bitwise repeatability of the reductions."""

import pytest
import torch
from focal_loss_reference import adversarial_case, make_case, reference_sigmoid_focal_loss

import detops_losses
from detops_core.testing import call, oracles, torchvision_ops

REDUCTIONS = ["none", "mean", "sum"]
# (alpha, gamma): the default, no weighting, gamma 0 (plain weighted BCE), gamma 1, a
# fractional and a large gamma, the alpha bounds.
PARAMS = [(0.25, 2.0), (-1.0, 2.0), (0.25, 0.0), (0.5, 1.0), (0.75, 1.5), (0.25, 5.0), (0.0, 2.0), (1.0, 0.5)]
PARAM_IDS = [f"alpha{a}_gamma{g}" for a, g in PARAMS]
TV = torchvision_ops()
needs_torchvision = pytest.mark.skipif(TV is None, reason="torchvision (the oracle) is not installed here")


def _assert_within(got, expected, rtol, atol, what):
    """|got - expected| <= rtol |expected| + atol elementwise (atol may be a tensor)."""
    got, expected = got.double(), expected.double()
    excess = (got - expected).abs() - (rtol * expected.abs() + atol)
    assert not (excess > 0).any(), f"{what}: {int((excess > 0).sum())} elements off, worst by {excess.max().item():.3g}"


def _loss_and_grads(fn, inputs, targets, alpha, gamma, reduction, grad_seed=5, grad_dtype=None):
    x = inputs.clone().requires_grad_()
    t = targets.clone().requires_grad_()
    loss = fn(x, t, alpha=alpha, gamma=gamma, reduction=reduction)
    g = torch.Generator().manual_seed(grad_seed)
    # Incoming gradients in [0.5, 1.5), rounded to grad_dtype (a narrow type compared with a
    # float32 computation) and then to the loss's dtype.
    grad = (torch.rand(loss.shape, generator=g, dtype=torch.float64) + 0.5).to(grad_dtype or loss.dtype)
    grad = grad.to(loss.dtype)
    gx, gt = torch.autograd.grad(loss, [x, t], grad)
    return loss.detach(), gx, gt


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("alpha,gamma", PARAMS, ids=PARAM_IDS)
@pytest.mark.parametrize("soft", [False, True], ids=["binary", "soft"])
def test_matches_oracles_float32(reduction, alpha, gamma, soft):
    """Loss and both gradients: close to the reference (the definition evaluated in float64,
    then rounded) and to torchvision. torchvision's float32 1 - p_t loses digits for
    confident logits, which matters for gamma < 1 (m ** (gamma - 1) magnifies it), so where
    it differs from the reference detops may differ from it by as much, but not more."""
    inputs, targets = make_case((53, 17), soft=soft)
    ours = _loss_and_grads(detops_losses.sigmoid_focal_loss, inputs, targets, alpha, gamma, reduction)
    found = oracles("sigmoid_focal_loss")
    results = {
        oracle: _loss_and_grads(
            lambda *a, oracle=oracle, **k: call("sigmoid_focal_loss", oracle, *a, **k),
            inputs,
            targets,
            alpha,
            gamma,
            reduction,
        )
        for oracle in found
    }
    for i, what in enumerate(("loss", "grad inputs", "grad targets")):
        exact = results["reference"][i]
        assert ours[i].dtype == exact.dtype and ours[i].shape == exact.shape, what
        torch.testing.assert_close(
            ours[i], exact, rtol=2e-5, atol=1e-6, msg=lambda m, what=what: f"reference {what}: {m}"
        )
        if "torchvision" in results:
            theirs = results["torchvision"][i]
            assert theirs.dtype == ours[i].dtype and theirs.shape == ours[i].shape, what
            slack = (theirs.double() - exact.double()).abs()
            _assert_within(ours[i], theirs, 2e-5, slack + 1e-6, f"torchvision {what}")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_closer_to_the_definition_than_torchvision(dtype, reduction):
    """Per element (reduction none) the error against the float64 definition is within 16
    units of 2^-24 (float32) relative, or the smallest normal number absolute (losses in the
    subnormal range have fewer digits); reduced, no larger than torchvision's own."""
    inputs, targets = make_case((200, 30), dtype=dtype, scale=8.0)
    ours = detops_losses.sigmoid_focal_loss(inputs, targets, reduction=reduction).double()
    exact = reference_sigmoid_focal_loss(inputs.double(), targets.double(), reduction=reduction)
    eps = torch.finfo(dtype).eps
    if reduction == "none":
        bound = 8 * eps * exact.abs() + torch.finfo(dtype).tiny
        assert ((ours - exact).abs() <= bound).all()
    else:
        bound = (1e-12 if dtype == torch.float64 else 3e-6) * exact.abs()
        assert (ours - exact).abs() <= bound
    if TV is not None and dtype == torch.float32:
        theirs = TV.sigmoid_focal_loss(inputs, targets, reduction=reduction).double()
        assert (ours - exact).abs().max() <= (theirs - exact).abs().max() + 2 * eps * exact.abs().max()


@needs_torchvision
@pytest.mark.parametrize("alpha,gamma", PARAMS, ids=PARAM_IDS)
def test_adversarial_logits(alpha, gamma):
    """Saturated, underflowing and huge logits against every kind of target: where
    torchvision's float32 loss is finite ours is, and both are close to the float64
    definition; the gradients agree with torchvision's wherever those are finite (see
    test_fractional_gamma_at_saturation for where they are not)."""
    inputs, targets = adversarial_case()
    loss, gx, gt = _loss_and_grads(detops_losses.sigmoid_focal_loss, inputs, targets, alpha, gamma, "none")
    tv_loss, tv_gx, tv_gt = _loss_and_grads(TV.sigmoid_focal_loss, inputs, targets, alpha, gamma, "none")
    exact = reference_sigmoid_focal_loss(inputs.double(), targets.double(), alpha, gamma)
    assert torch.equal(loss.isfinite(), tv_loss.isfinite())
    torch.testing.assert_close(loss, tv_loss, rtol=2e-5, atol=1e-6, equal_nan=True)
    finite = exact.isfinite()
    err = (loss.double() - exact).abs()[finite]
    assert (err <= 8 * 2**-24 * exact.abs()[finite] + 1e-37).all()
    for what, ours, theirs in (("inputs", gx, tv_gx), ("targets", gt, tv_gt)):
        where = theirs.isfinite()
        assert ours[where].isfinite().all(), what
        torch.testing.assert_close(
            ours[where], theirs[where], rtol=2e-5, atol=1e-5, msg=lambda m, what=what: f"{what}: {m}"
        )


@needs_torchvision
def test_fractional_gamma_at_saturation():
    """gamma < 1 at a logit so large that exp(-|x|) underflows for the right class: the
    derivative of (1 - p_t) ** gamma is infinite there and torchvision's gradient is NaN
    (inf * 0); detops gives the limit, 0."""
    inputs = torch.tensor([120.0, -120.0, 3.0])
    targets = torch.tensor([1.0, 0.0, 1.0])
    _, gx, gt = _loss_and_grads(detops_losses.sigmoid_focal_loss, inputs, targets, 0.25, 0.5, "none")
    _, tv_gx, _ = _loss_and_grads(TV.sigmoid_focal_loss, inputs, targets, 0.25, 0.5, "none")
    assert tv_gx[:2].isnan().all()
    assert torch.equal(gx[:2], torch.zeros(2)) and torch.equal(gt[:2], torch.zeros(2))
    torch.testing.assert_close(gx[2], tv_gx[2])


@needs_torchvision
@pytest.mark.parametrize("value", [float("inf"), -float("inf"), float("nan")])
def test_non_finite_logits_and_targets(value):
    """Infinite or NaN logits give torchvision's loss (inf, or NaN where 0 * inf arises);
    a NaN target gives NaN."""
    inputs = torch.tensor([value, value, value, 1.0])
    targets = torch.tensor([0.0, 1.0, 0.5, float("nan")])
    for reduction in REDUCTIONS:
        ours = detops_losses.sigmoid_focal_loss(inputs, targets, reduction=reduction)
        theirs = TV.sigmoid_focal_loss(inputs, targets, reduction=reduction)
        torch.testing.assert_close(ours, theirs, equal_nan=True)


@needs_torchvision
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_narrow_dtypes(dtype, reduction):
    """float16/bfloat16 are computed in float32 and rounded once: the result (and gradients)
    are torchvision's float32 result on the same narrow values, rounded to the narrow type,
    within one unit in its last place, and closer to it than torchvision's own narrow
    computation."""
    inputs, targets = make_case((64, 13), dtype=dtype, scale=3.0)
    ours = _loss_and_grads(detops_losses.sigmoid_focal_loss, inputs, targets, 0.25, 2.0, reduction)
    wide = _loss_and_grads(
        TV.sigmoid_focal_loss, inputs.float(), targets.float(), 0.25, 2.0, reduction, grad_dtype=dtype
    )
    narrow = TV.sigmoid_focal_loss(inputs, targets, reduction=reduction)
    assert ours[0].dtype == narrow.dtype == dtype
    ulp = torch.finfo(dtype).eps
    for what, a, b in zip(("loss", "grad inputs", "grad targets"), ours, wide):
        assert a.dtype == dtype, what
        torch.testing.assert_close(a.float(), b, rtol=ulp, atol=1e-4 if what != "loss" else 1e-6, msg=what)
    exact = wide[0].double()
    assert (ours[0].double() - exact).abs().max() <= (narrow.double() - exact).abs().max() + 1e-7


@needs_torchvision
def test_mixed_dtypes_promote_as_torchvision():
    inputs, targets = make_case((5, 7))
    for a, b in ((inputs.half(), targets), (inputs, targets.bfloat16()), (inputs.double(), targets)):
        ours = detops_losses.sigmoid_focal_loss(a, b)
        assert ours.dtype == TV.sigmoid_focal_loss(a, b).dtype
        # torchvision takes the sigmoid in the narrow type before promoting; detops promotes
        # first, so compare with torchvision on the promoted values.
        wide = torch.promote_types(a.dtype, b.dtype)
        torch.testing.assert_close(ours, TV.sigmoid_focal_loss(a.to(wide), b.to(wide)))


@pytest.mark.parametrize("shape", [(0,), (0, 80), (3, 0, 2)])
def test_empty(shape):
    inputs = torch.empty(shape).requires_grad_()
    targets = torch.empty(shape)
    none = detops_losses.sigmoid_focal_loss(inputs, targets)
    assert none.shape == inputs.shape
    assert detops_losses.sigmoid_focal_loss(inputs, targets, reduction="sum").item() == 0.0
    mean = detops_losses.sigmoid_focal_loss(inputs, targets, reduction="mean")
    assert mean.shape == () and mean.isnan()
    (grad,) = torch.autograd.grad(detops_losses.sigmoid_focal_loss(inputs, targets, reduction="sum"), [inputs])
    assert grad.shape == inputs.shape
    if TV is not None:
        assert TV.sigmoid_focal_loss(inputs, targets, reduction="mean").isnan()


@pytest.mark.parametrize("shape", [(), (7,), (2, 3, 4, 5)])
def test_any_shape_and_non_contiguous(shape):
    inputs, targets = make_case((*shape, 2) if shape else (2,), dtype=torch.float64)
    x, t = inputs[..., 1], targets[..., 0]  # strided views
    ours = detops_losses.sigmoid_focal_loss(x, t)
    torch.testing.assert_close(ours, reference_sigmoid_focal_loss(x, t))
    assert ours.shape == x.shape


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (-1.0, 0.0), (0.7, 1.5), (0.25, 1.0)])
def test_gradcheck_float64(reduction, alpha, gamma):
    inputs, targets = make_case((6, 5), dtype=torch.float64, scale=2.0, soft=True)
    x = inputs.requires_grad_()
    t = targets.requires_grad_()
    assert torch.autograd.gradcheck(
        lambda a, b: detops_losses.sigmoid_focal_loss(a, b, alpha, gamma, reduction), (x, t), eps=1e-6, atol=1e-7
    )


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_reductions_bitwise_repeatable_across_thread_counts(reduction):
    inputs, targets = make_case((700, 91), scale=3.0)  # 32 chunks of the reduction, split across threads
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            x = inputs.clone().requires_grad_()
            loss = detops_losses.sigmoid_focal_loss(x, targets, reduction=reduction)
            (grad,) = torch.autograd.grad(loss, [x])
            results.append((loss, grad))
    finally:
        torch.set_num_threads(threads)
    for loss, grad in results[1:]:
        assert torch.equal(loss, results[0][0]) and torch.equal(grad, results[0][1])


def test_targets_gradient_only_when_asked():
    """The backward op computes the targets gradient only when targets require grad."""
    inputs, targets = make_case((9, 4))
    grad = torch.ones(())
    _, none = torch.ops.detops._sigmoid_focal_loss_backward(grad, inputs, targets, 0.25, 2.0, "sum", False)
    assert none.shape == (0,)
    x = inputs.clone().requires_grad_()
    loss = detops_losses.sigmoid_focal_loss(x, targets, reduction="sum")
    (gx,) = torch.autograd.grad(loss, [x])
    expected, _ = torch.ops.detops._sigmoid_focal_loss_backward(grad, inputs, targets, 0.25, 2.0, "sum", True)
    assert torch.equal(gx, expected)
