"""GradCAM from real gradients: a hand computation, target-class sensitivity, shape, sign, no side effects."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from eval_viewer.debuggers.builtins.gradcam import GradCAMDebugger, gradcam_from
from eval_viewer.debuggers.builtins.gradients import GradientsDebugger
from eval_viewer.errors import CaptureError


class TinyClassifier(nn.Module):
    """conv -> features A -> global mean -> linear: dlogit_c/dA_k(i, j) = W[c, k] / (h w), so GradCAM is known."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Conv2d(2, 3, 3, padding=1)
        self.head = nn.Linear(3, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


class TinySegmenter(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1))
        self.act = nn.ReLU()
        self.head = nn.Conv2d(8, 3, 1)

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        x = inputs["image"]
        return F.interpolate(self.head(self.act(self.encoder(x))), size=x.shape[-2:], mode="bilinear")


def test_gradcam_equals_the_hand_computation() -> None:
    torch.manual_seed(0)
    model = TinyClassifier().eval()
    x = torch.randn(2, 2, 5, 6)
    with torch.no_grad():
        result = GradCAMDebugger("features", target_class=2, normalize=False)({"inputs": x}, model)
        feats = model.features(x)
    expected = F.relu((model.head.weight[2].detach()[None, :, None, None] / 30.0 * feats).sum(dim=1))
    torch.testing.assert_close(result["gradcam"], expected, rtol=1e-5, atol=1e-7)
    assert result["target_class"].tolist() == [2, 2]
    torch.testing.assert_close(result["score"], model(x)[:, 2].detach())
    assert all(p.grad is None for p in model.parameters())


def test_gradcam_from_matches_its_definition() -> None:
    act, grad = torch.randn(1, 3, 2, 2), torch.randn(1, 3, 2, 2)
    alpha = grad.mean(dim=(2, 3))
    manual = torch.clamp(sum(alpha[0, k] * act[0, k] for k in range(3)), min=0)
    torch.testing.assert_close(gradcam_from(act, grad)[0], manual)


def test_segmentation_gradcam_depends_on_the_target_class_and_has_input_size() -> None:
    torch.manual_seed(1)
    model = TinySegmenter().eval()
    for p in model.parameters():  # a frozen model still gets its GradCAM
        p.requires_grad_(False)
    batch = {"inputs": {"image": torch.rand(2, 3, 16, 12)}}
    with torch.no_grad():
        maps = {c: GradCAMDebugger("encoder", target_class=c, pixels="all")(batch, model) for c in (1, 2)}
    for c, result in maps.items():
        cam = result["gradcam"]
        assert cam.shape == (2, 16, 12) and cam.dtype == torch.float32
        assert float(cam.min()) >= 0.0
        torch.testing.assert_close(cam.flatten(1).amax(dim=1), torch.ones(2))
        assert result["target_class"].tolist() == [c, c]
    assert (maps[1]["gradcam"] - maps[2]["gradcam"]).abs().max() > 0.05


def test_default_target_is_the_largest_predicted_foreground_class() -> None:
    torch.manual_seed(2)
    model = TinySegmenter().eval()
    batch = {"inputs": {"image": torch.rand(3, 3, 8, 8)}}
    result = GradCAMDebugger("act", dtype=torch.float16)(batch, model)
    with torch.no_grad():
        predicted = model(batch["inputs"]).argmax(dim=1)
    for i, target in enumerate(result["target_class"].tolist()):
        counts = torch.bincount(predicted[i].flatten(), minlength=3)
        counts[0] = -1
        assert target != 0 or counts.max() <= 0
        if counts.max() > 0:
            assert target == int(counts.argmax())
    assert result["gradcam"].dtype == torch.float16


def test_unknown_layer_and_bad_target_fail_with_capture_errors() -> None:
    model = TinyClassifier()
    with pytest.raises(CaptureError, match="featres|features"):
        GradCAMDebugger("featres")({"inputs": torch.randn(1, 2, 4, 4)}, model)
    with pytest.raises(CaptureError, match="target_class"):
        GradCAMDebugger("features", target_class=9)({"inputs": torch.randn(1, 2, 4, 4)}, model)


def test_gradients_debugger_gives_each_datapoint_its_own_gradient() -> None:
    torch.manual_seed(3)
    model = TinySegmenter().eval()
    x = torch.rand(2, 3, 8, 8)
    labels = torch.randint(0, 3, (2, 8, 8))

    def loss_fn(outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs, y, reduction="none").mean(dim=(1, 2))

    debugger = GradientsDebugger("act", loss_fn=loss_fn, max_channels=None, max_side=None)
    with torch.no_grad():
        result = debugger({"inputs": {"image": x}, "labels": labels}, model)
    for i in range(2):  # the gradient datapoint i gets equals its own loss's gradient, computed alone
        feats = model.encoder(x[i : i + 1]).detach().requires_grad_(True)
        relu = model.act(feats)
        out = F.interpolate(model.head(relu), size=(8, 8), mode="bilinear")
        (grad,) = torch.autograd.grad(loss_fn(out, labels[i : i + 1]).sum(), relu)
        torch.testing.assert_close(result["grad_output"][i], grad[0], rtol=1e-4, atol=1e-7)
    assert result["stats"]["norm"].shape == (2,) and result["objective"].shape == (2,)
    assert all(p.grad is None for p in model.parameters())
    with pytest.raises(CaptureError, match="one loss per datapoint"):
        GradientsDebugger("act", loss_fn=lambda o, y: F.cross_entropy(o, y))({"inputs": {"image": x}, "labels": labels},
                                                                             model)


def _one_at_a_time(model: nn.Module, inputs: torch.Tensor, targets: list[int], **options: object) -> torch.Tensor:
    """The oracle: GradCAM of each datapoint alone, with its class as the scalar target_class."""
    maps = [GradCAMDebugger(target_class=t, **options)({"inputs": inputs[i:i + 1]}, model)  # type: ignore[arg-type]
            for i, t in enumerate(targets)]
    return torch.stack([m["gradcam"][0] for m in maps])


@pytest.mark.parametrize("form", ["list", "tensor", "labels", "prediction"])
def test_per_datapoint_targets_equal_gradcam_of_each_datapoint_alone(form: str) -> None:
    torch.manual_seed(5)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5)).eval()
    inputs, labels = torch.randn(4, 3, 9, 7), torch.tensor([3, 0, 4, 3])
    with torch.no_grad():
        predicted = model(inputs).argmax(dim=1).tolist()
    target = {"list": labels.tolist(), "tensor": labels, "labels": lambda d, outputs: d["labels"],
              "prediction": lambda d, outputs: outputs.argmax(dim=1)}[form]
    expected_classes = predicted if form == "prediction" else labels.tolist()
    if form != "prediction":
        assert expected_classes != predicted  # the labels are not simply the prediction
    with torch.no_grad():
        result = GradCAMDebugger("2", target_class=target)({"inputs": inputs, "labels": labels}, model)
        oracle = _one_at_a_time(model, inputs, expected_classes, target_layer="2")
    assert result["target_class"].tolist() == expected_classes
    torch.testing.assert_close(result["gradcam"], oracle, rtol=1e-5, atol=1e-6)
    assert len({tuple(result["gradcam"][i].flatten().tolist()) for i in (0, 1)}) == 2


def test_per_datapoint_segmentation_targets_equal_each_datapoint_alone() -> None:
    torch.manual_seed(6)
    model = TinySegmenter().eval()
    image = torch.rand(3, 3, 12, 10)
    with torch.no_grad():
        result = GradCAMDebugger("encoder", target_class=[2, 1, 2], pixels="all")({"inputs": {"image": image}}, model)
        maps = [GradCAMDebugger("encoder", target_class=t, pixels="all")({"inputs": {"image": image[i:i + 1]}}, model)
                for i, t in enumerate([2, 1, 2])]
    torch.testing.assert_close(result["gradcam"], torch.cat([m["gradcam"] for m in maps]), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(result["score"], torch.cat([m["score"] for m in maps]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("target, message", [([1, 2], "2 classes for a batch of 3"), ([0, 1, 9], "9 is outside"),
                                             (torch.tensor([0.5, 1.0, 2.0]), "must be ints"),
                                             (lambda d, o: "cat", "must be ints")])
def test_per_datapoint_targets_that_do_not_fit_the_batch_are_refused(target: object, message: str) -> None:
    model = TinyClassifier().eval()
    with pytest.raises(CaptureError, match=message):
        debugger = GradCAMDebugger("features", target_class=target)  # type: ignore[arg-type]
        debugger({"inputs": torch.randn(3, 2, 4, 4)}, model)
