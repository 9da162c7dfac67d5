"""Bad calls of the NMS ops, each with a pattern of the error it must raise. The tests of
each op's messages and the test that the fake kernels raise what the native ops raise
(test_bad_input.py) read the same lists, so a case added here is checked both ways."""

import torch

ops = torch.ops.detops


def _idxs(*shape, dtype=torch.int64):
    return torch.zeros(shape, dtype=dtype)


# (boxes, scores, message): nms, batched_nms, soft_nms and batched_soft_nms share these checks.
BAD_BOXES_AND_SCORES = [
    (torch.rand(3, 4), torch.rand(4), "scores must have one entry per box"),
    (torch.rand(3, 5), torch.rand(3), r"boxes must be a 2-D tensor of shape \[N, 4\]"),
    (torch.rand(3, 4, 1), torch.rand(3), "boxes must be"),
    (torch.rand(3, 4), torch.rand(3, 1), "scores must be a 1-D tensor"),
    (torch.randint(0, 9, (3, 4)), torch.randint(0, 9, (3,)), "boxes must be a floating-point tensor"),
    (torch.rand(3, 4), torch.rand(3, dtype=torch.float64), "same dtype"),
    (torch.rand(3, 4, device="meta"), torch.rand(3), "same device"),
]

# (idxs, message) next to three good boxes: batched_nms and batched_soft_nms.
BAD_IDXS = [
    (torch.zeros(3), "idxs must be an int64 tensor"),
    (_idxs(3, dtype=torch.bool), "idxs must be an int64 tensor"),
    (_idxs(3, dtype=torch.int32), "idxs must be an int64 tensor"),
    (_idxs(4), r"idxs must be a 1-D tensor of shape \[N\]"),
    (_idxs(2), r"idxs must be a 1-D tensor of shape \[N\]"),
    (_idxs(3, 1), r"idxs must be a 1-D tensor of shape \[N\]"),
]

# (keyword arguments, message) of soft_nms and batched_soft_nms.
BAD_SOFT_OPTIONS = [
    (dict(method="hard"), 'method must be "gaussian" or "linear", got "hard"'),
    (dict(method="box"), 'method must be "gaussian" or "linear", got "box"'),
    (dict(sigma=0.0), "sigma must be > 0 for the gaussian method, got 0"),
    (dict(sigma=-1.0), "sigma must be > 0 for the gaussian method, got -1"),
    (dict(sigma=-0.5, score_threshold=0.0), r"sigma must be > 0 for the gaussian method, got -0\.5"),
    (dict(sigma=-1e-7), "sigma must be > 0 for the gaussian method, got -1e-07"),
    (dict(sigma=float("nan")), "sigma must be > 0 for the gaussian method"),
]

# (boxes, scores, idxs, message) of nms_per_image.
BAD_PER_IMAGE = [
    (torch.rand(5, 4), torch.rand(5), None, r"boxes must be a 3-D tensor of shape \[B, N, 4\], got shape \[5, 4\]"),
    (torch.rand(2, 5, 3), torch.rand(2, 5), None, r"boxes must be a 3-D tensor of shape \[B, N, 4\]"),
    (torch.rand(2, 5, 4), torch.rand(2, 4), None, r"scores must be a 2-D tensor of shape \[B, N\] = \[2, 5\]"),
    (torch.rand(2, 3, 4), torch.rand(3, 2), None, r"scores must be a 2-D tensor of shape \[B, N\] = \[2, 3\]"),
    (torch.rand(2, 5, 4), torch.rand(2, 5).double(), None, "same floating-point dtype"),
    (torch.rand(2, 5, 4).int(), torch.rand(2, 5).int(), None, "same floating-point dtype"),
    (torch.rand(2, 5, 4), torch.rand(2, 5), _idxs(2, 4), r"idxs must be an int64 tensor of shape \[B, N\]"),
    (torch.rand(2, 5, 4), torch.rand(2, 5), torch.zeros(2, 5), r"idxs must be an int64 tensor of shape \[B, N\]"),
]

MAX_OUTPUT_MESSAGE = "max_output must be None or >= 0, got {}"


def bad_calls():
    """(name, op, args, message) for every case above on every op it applies to, as
    positional arguments of the OpOverload (the form the fake kernels receive)."""
    good_boxes, good_scores = torch.rand(3, 4), torch.rand(3)
    calls = []
    for i, (boxes, scores, message) in enumerate(BAD_BOXES_AND_SCORES):
        calls += [
            (f"nms-{i}", ops.nms.default, (boxes, scores, 0.5), message),
            (f"batched_nms-{i}", ops.batched_nms.default, (boxes, scores, _idxs(3), 0.5), message),
            (f"soft_nms-{i}", ops.soft_nms.default, (boxes, scores, 0.3, 0.5, 0.001, "gaussian"), message),
        ]
    for i, (idxs, message) in enumerate(BAD_IDXS):
        calls += [
            (f"batched_nms-idxs{i}", ops.batched_nms.default, (good_boxes, good_scores, idxs, 0.5), message),
            (
                f"batched_soft_nms-idxs{i}",
                ops.batched_soft_nms.default,
                (good_boxes, good_scores, idxs, 0.3, 0.5, 0.001, "linear"),
                message,
            ),
        ]
    soft = dict(iou_threshold=0.3, sigma=0.5, score_threshold=0.001, method="gaussian")
    for i, (options, message) in enumerate(BAD_SOFT_OPTIONS):
        o = {**soft, **options}
        values = (o["iou_threshold"], o["sigma"], o["score_threshold"], o["method"])
        calls += [
            (f"soft_nms-options{i}", ops.soft_nms.default, (good_boxes, good_scores, *values), message),
            (
                f"batched_soft_nms-options{i}",
                ops.batched_soft_nms.default,
                (good_boxes, good_scores, _idxs(3), *values),
                message,
            ),
        ]
    for i, (boxes, scores, idxs, message) in enumerate(BAD_PER_IMAGE):
        calls.append((f"nms_per_image-{i}", ops.nms_per_image.default, (boxes, scores, idxs, 0.5, None), message))
    for limit in (-1, -2, -3):
        message = MAX_OUTPUT_MESSAGE.format(limit)
        calls += [
            (f"nms-max_output{limit}", ops.nms.default, (good_boxes, good_scores, 0.5, limit), message),
            (
                f"batched_nms-max_output{limit}",
                ops.batched_nms.default,
                (good_boxes, good_scores, _idxs(3), 0.5, limit),
                message,
            ),
            (
                f"nms_per_image-max_output{limit}",
                ops.nms_per_image.default,
                (good_boxes[None], good_scores[None], None, 0.5, limit),
                message,
            ),
        ]
    return calls
