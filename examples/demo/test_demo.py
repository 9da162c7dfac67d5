"""The demo trains a working detector: after `nox -s demo`'s training, box mAP@0.5 on the
held-out images is at least 0.8, and the trained model's detections are the same on detops
as on torchvision's ops. Slow (the whole demo: about 5 minutes on 2 cores); CI runs it
through `nox -s demo -- --test`."""

import json

import demo
import matplotlib.image
import pytest

pytestmark = pytest.mark.slow


def test_demo_trains_a_working_detector(tmp_path):
    summary = demo.run(str(tmp_path), demo.STEPS, demo.COMPARE_STEPS, progress=False)
    assert summary["box_map50"] >= 0.8, summary
    assert summary["identical_detections"] == f"{demo.CHECKED_IMAGES}/{demo.CHECKED_IMAGES}", summary
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    for name in ("detections.jpg", "training.png"):
        # A smoke check that something was drawn; the mAP above is what proves the detector.
        pixels = matplotlib.image.imread(tmp_path / name)
        assert pixels.shape[0] > 200 and pixels.shape[1] > 200 and (pixels[..., :3] / pixels.max()).std() > 0.05, name
