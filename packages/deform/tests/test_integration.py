"""The op in torch's machinery: opcheck, TorchScript, torch.compile, torch.export,
autocast, and the DeformConv2d module."""

import pytest
import torch
from deform_reference import make_case, op_args

import detops_deform
from detops_core.testing import (
    assert_autocast_float32,
    assert_compiles,
    assert_exports,
    assert_opcheck,
    assert_scripts,
    call,
    devices,
    to_device,
    torchvision_ops,
)
from detops_deform import DeformConv2d, deform_conv2d

TENSOR_ARGS = ("input", "offset", "weight", "bias", "mask")


@pytest.mark.parametrize(
    "config",
    [
        dict(),
        dict(use_mask=False, use_bias=False),
        dict(groups=2, offset_groups=2, stride=(2, 1), padding=(0, 1), dilation=(1, 2), size=(8, 9)),
    ],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("device", devices())
def test_opcheck(config, dtype, device):
    args = to_device(make_case(dtype=dtype, **config), device)
    for k in TENSOR_ARGS:
        if args[k] is not None:
            args[k].requires_grad_()
    assert_opcheck(torch.ops.detops.deform_conv2d.default, op_args(args))


@pytest.mark.parametrize("device", devices())
def test_opcheck_backward_op(device):
    args = to_device(make_case(), device)
    grad = torch.randn_like(deform_conv2d(**args))
    # Its gradient is not an op of its own: opcheck's autograd tests do not apply.
    torch.library.opcheck(
        torch.ops.detops._deform_conv2d_backward.default,
        (grad, *op_args(args)[:3], *op_args(args)[4:]),
        test_utils=("test_schema", "test_faketensor"),
    )


@pytest.mark.parametrize("device", devices())
def test_torchscript_function(device):
    for use_mask in (True, False):
        args = to_device(make_case(use_mask=use_mask, stride=(2, 1), padding=(1, 0), size=(9, 8)), device)
        positional = [args[k] for k in ("input", "offset", "weight", "bias", "stride", "padding", "dilation", "mask")]
        assert_scripts(deform_conv2d, positional)


@pytest.mark.parametrize("device", devices())
def test_torchscript_module_and_caller(device):
    torch.manual_seed(0)
    module = DeformConv2d(4, 6, 3, padding=1).to(device)
    args = to_device(make_case(dtype=torch.float32, out_channels=6), device)
    assert_scripts(module, (args["input"], args["offset"], args["mask"]))
    assert_scripts(module, (args["input"], args["offset"]))

    class Caller(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.offset = torch.nn.Conv2d(4, 18, 3, padding=1)
            self.deform = DeformConv2d(4, 6, 3, padding=1)

        def forward(self, x):
            return self.deform(x, self.offset(x))

    assert_scripts(Caller().to(device), (torch.randn(2, 4, 7, 6, device=device),))


@pytest.mark.parametrize("device", devices())
def test_compile_fullgraph_forward_and_backward(device):
    torch._dynamo.reset()
    args = to_device(make_case(dtype=torch.float32, offset_groups=2), device)

    def fn(input, offset, weight, bias, mask):
        return deform_conv2d(input, offset, weight, bias, stride=1, padding=(1, 1), mask=mask).relu().sum()

    tensors = [args[k].requires_grad_() for k in TENSOR_ARGS]
    assert_compiles(fn, tensors, backward=True, backend="aot_eager")


@pytest.mark.parametrize("device", devices())
def test_compile_fullgraph_inductor_module(device):
    torch._dynamo.reset()
    torch.manual_seed(1)
    module = DeformConv2d(4, 4, (3, 2), padding=(1, 0), bias=False).to(device)
    args = to_device(
        make_case(dtype=torch.float32, kernel=(3, 2), padding=(1, 0), out_channels=4, use_mask=False), device
    )
    assert_compiles(module, (args["input"], args["offset"]))


@pytest.mark.parametrize("device", devices())
def test_export(device):
    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.deform = DeformConv2d(4, 6, 3, padding=1)

        def forward(self, x, offset, mask):
            return self.deform(x, offset, mask)

    torch.manual_seed(2)
    args = to_device(make_case(dtype=torch.float32), device)
    program = assert_exports(Model().to(device), (args["input"], args["offset"], args["mask"]))
    assert any("deform_conv2d" in str(n.target) for n in program.graph.nodes)


@pytest.mark.parametrize("device", devices())
def test_autocast_computes_in_float32_and_returns_the_input_dtype(device):
    args = to_device(make_case(dtype=torch.float32), device)
    args["input"] = args["input"].bfloat16()  # mixed dtypes, as inside an autocast region
    with torch.autocast(device, dtype=torch.bfloat16):
        out = deform_conv2d(**args)
    assert out.dtype == torch.bfloat16  # as torchvision's autocast kernel returns it
    expected = deform_conv2d(**dict(args, input=args["input"].float()))
    torch.testing.assert_close(out, expected.bfloat16())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("device", devices())
def test_autocast_of_narrow_arguments(dtype, device):
    args = to_device(make_case(dtype=torch.float32), device)
    assert_autocast_float32(torch.ops.detops.deform_conv2d, op_args(args), device, dtype)


@pytest.mark.parametrize("device", devices())
def test_int_and_pair_arguments_are_equivalent(device):
    args = to_device(make_case(stride=(2, 2), padding=(1, 1), dilation=(2, 2), size=(9, 9)), device)
    as_ints = dict(args, stride=2, padding=1, dilation=2)
    torch.testing.assert_close(deform_conv2d(**as_ints), deform_conv2d(**args), rtol=0, atol=0)
    as_lists = dict(args, stride=[2, 2], padding=[1, 1], dilation=[2, 2])
    torch.testing.assert_close(deform_conv2d(**as_lists), deform_conv2d(**args), rtol=0, atol=0)


@pytest.mark.parametrize(
    "ctor",
    [
        (4, 6, 3),
        (4, 6, 3, 2, 1, 2, 2, False),
        (6, 3, (1, 3), 1, (0, 1)),
        (2, 2, 2, 1, 0, 1, 1, True),
    ],
)
def test_module_matches_torchvision_construction(ctor):
    torch.manual_seed(3)
    ours = DeformConv2d(*ctor)
    tv = torchvision_ops()
    if tv is not None:
        torch.manual_seed(3)
        theirs = tv.DeformConv2d(*ctor)
        assert repr(ours) == repr(theirs)
        torch.testing.assert_close(ours.weight, theirs.weight, rtol=0, atol=0)
        if theirs.bias is not None:
            torch.testing.assert_close(ours.bias, theirs.bias, rtol=0, atol=0)
    assert repr(ours).startswith(f"DeformConv2d({ctor[0]}, {ctor[1]}, kernel_size=")
    fan_in = ours.weight[0].numel()
    assert ours.weight.abs().max() <= 1 / fan_in**0.5 + 1e-6  # kaiming_uniform(a=sqrt(5)) bound


@pytest.mark.parametrize("device", devices())
def test_module_repr_and_forward(device):
    m = DeformConv2d(4, 8, 3, stride=2, padding=1, dilation=2, groups=2, bias=False).to(device)
    expected = "DeformConv2d(4, 8, kernel_size=(3, 3), stride=(2, 2), padding=(1, 1), dilation=(2, 2), groups=2"
    assert repr(m) == expected + ", bias=False)"
    assert repr(DeformConv2d(3, 5, 3)) == "DeformConv2d(3, 5, kernel_size=(3, 3), stride=(1, 1))"
    args = make_case(
        dtype=torch.float32,
        in_channels=4,
        out_channels=8,
        groups=2,
        stride=(2, 2),
        padding=(1, 1),
        dilation=(2, 2),
        size=(9, 9),
    )
    args = to_device(args, device)
    same_call = (args["input"], args["offset"], m.weight, None, (2, 2), (1, 1), (2, 2), args["mask"])
    expected = call("deform_conv2d", "reference", *same_call)
    torch.testing.assert_close(m(args["input"], args["offset"], args["mask"]), expected, rtol=1e-4, atol=1e-4)


def test_module_rejects_bad_groups():
    with pytest.raises(ValueError, match="in_channels"):
        DeformConv2d(5, 4, 3, groups=2)
    with pytest.raises(ValueError, match="out_channels"):
        DeformConv2d(4, 5, 3, groups=2)


def test_build_info():
    info = detops_deform.build_info()
    assert info["package"] == "detops_deform"
