"""The op in torch's machinery: opcheck, TorchScript, torch.compile, torch.export,
autocast, and the DeformConv2d module."""

import warnings

import pytest
import torch
from deform_reference import HAVE_TORCHVISION, ORACLES, make_case

import detops_deform
from detops_core.testing import devices, to_device
from detops_deform import DeformConv2d, deform_conv2d


def _op_args(args):
    s, p, d = args["stride"], args["padding"], args["dilation"]
    return (
        args["input"],
        args["offset"],
        args["weight"],
        args["bias"],
        args["mask"],
        s[0],
        s[1],
        p[0],
        p[1],
        d[0],
        d[1],
    )


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
    for k in ("input", "offset", "weight", "bias", "mask"):
        if args[k] is not None:
            args[k].requires_grad_()
    torch.library.opcheck(torch.ops.detops.deform_conv2d.default, _op_args(args))


@pytest.mark.parametrize("device", devices())
def test_opcheck_backward_op(device):
    args = to_device(make_case(), device)
    out = deform_conv2d(**args)
    grad = torch.randn_like(out)
    s, p, d = args["stride"], args["padding"], args["dilation"]
    torch.library.opcheck(
        torch.ops.detops._deform_conv2d_backward.default,
        (grad, args["input"], args["offset"], args["weight"], args["mask"], s[0], s[1], p[0], p[1], d[0], d[1]),
        test_utils=("test_schema", "test_faketensor"),
    )


def _script(obj):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.script(obj)


@pytest.mark.parametrize("device", devices())
def test_torchscript_function(device):
    scripted = _script(deform_conv2d)
    for use_mask in (True, False):
        args = to_device(make_case(use_mask=use_mask, stride=(2, 1), padding=(1, 0), size=(9, 8)), device)
        expected = deform_conv2d(**args)
        got = scripted(
            args["input"],
            args["offset"],
            args["weight"],
            args["bias"],
            args["stride"],
            args["padding"],
            args["dilation"],
            args["mask"],
        )
        torch.testing.assert_close(got, expected, rtol=0, atol=0)


@pytest.mark.parametrize("device", devices())
def test_torchscript_module_and_caller(device):
    torch.manual_seed(0)
    module = DeformConv2d(4, 6, 3, padding=1).to(device)
    scripted = _script(module)
    args = to_device(make_case(dtype=torch.float32, out_channels=6), device)
    torch.testing.assert_close(
        scripted(args["input"], args["offset"], args["mask"]), module(args["input"], args["offset"], args["mask"])
    )
    torch.testing.assert_close(scripted(args["input"], args["offset"]), module(args["input"], args["offset"]))

    class Caller(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.offset = torch.nn.Conv2d(4, 18, 3, padding=1)
            self.deform = DeformConv2d(4, 6, 3, padding=1)

        def forward(self, x):
            return self.deform(x, self.offset(x))

    caller = Caller().to(device)
    x = torch.randn(2, 4, 7, 6, device=device)
    torch.testing.assert_close(_script(caller)(x), caller(x))


@pytest.mark.parametrize("device", devices())
def test_compile_fullgraph_forward_and_backward(device):
    torch._dynamo.reset()
    args = to_device(make_case(dtype=torch.float32, offset_groups=2), device)

    def fn(input, offset, weight, bias, mask):
        return deform_conv2d(input, offset, weight, bias, stride=1, padding=(1, 1), mask=mask).relu().sum()

    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    tensors = [args[k] for k in ("input", "offset", "weight", "bias", "mask")]
    eager_in = [t.clone().requires_grad_() for t in tensors]
    comp_in = [t.clone().requires_grad_() for t in tensors]
    fn(*eager_in).backward()
    compiled(*comp_in).backward()
    for a, b in zip(eager_in, comp_in):
        torch.testing.assert_close(b.grad, a.grad)


@pytest.mark.parametrize("device", devices())
def test_compile_fullgraph_inductor_module(device):
    torch._dynamo.reset()
    torch.manual_seed(1)
    module = DeformConv2d(4, 4, (3, 2), padding=(1, 0), bias=False).to(device)
    args = to_device(
        make_case(dtype=torch.float32, kernel=(3, 2), padding=(1, 0), out_channels=4, use_mask=False), device
    )
    compiled = torch.compile(module, fullgraph=True)
    torch.testing.assert_close(compiled(args["input"], args["offset"]), module(args["input"], args["offset"]))


@pytest.mark.parametrize("device", devices())
def test_export(device):
    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.deform = DeformConv2d(4, 6, 3, padding=1)

        def forward(self, x, offset, mask):
            return self.deform(x, offset, mask)

    torch.manual_seed(2)
    model = Model().to(device)
    args = to_device(make_case(dtype=torch.float32), device)
    inputs = (args["input"], args["offset"], args["mask"])
    exported = torch.export.export(model, inputs)
    assert any("deform_conv2d" in str(n.target) for n in exported.graph.nodes)
    torch.testing.assert_close(exported.module()(*inputs), model(*inputs))


@pytest.mark.parametrize("device", devices())
def test_autocast_computes_in_float32_and_returns_the_input_dtype(device):
    args = to_device(make_case(dtype=torch.float32), device)
    args["input"] = args["input"].bfloat16()  # mixed dtypes, as inside an autocast region
    with torch.autocast(device, dtype=torch.bfloat16):
        out = deform_conv2d(**args)
    assert out.dtype == torch.bfloat16  # as torchvision's autocast kernel returns it
    expected = deform_conv2d(**dict(args, input=args["input"].float()))
    torch.testing.assert_close(out, expected.bfloat16())


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
    if HAVE_TORCHVISION:
        from torchvision.ops import DeformConv2d as TVDeformConv2d

        torch.manual_seed(3)
        theirs = TVDeformConv2d(*ctor)
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
    expected = ORACLES["reference"](args["input"], args["offset"], m.weight, None, (2, 2), (1, 1), (2, 2), args["mask"])
    torch.testing.assert_close(m(args["input"], args["offset"], args["mask"]), expected, rtol=1e-4, atol=1e-4)


def test_module_rejects_bad_groups():
    with pytest.raises(ValueError, match="in_channels"):
        DeformConv2d(5, 4, 3, groups=2)
    with pytest.raises(ValueError, match="out_channels"):
        DeformConv2d(4, 5, 3, groups=2)


def test_build_info():
    info = detops_deform.build_info()
    assert info["package"] == "detops_deform"
