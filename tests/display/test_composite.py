"""Training composites, pixel-checked: every prompt type lands where its coordinates say, in its object's colour;
masks per object and per class are blended as documented; a clip shows its kept frames, each with its own prompts.

Inputs are a flat grey image, so the colour a pixel must have is computed here from the documented rule (blend at the
opacity, the palette colour of object k + 1) rather than read back from the code under test.
"""

from __future__ import annotations

import numpy as np
import pytest

from eval_viewer.debuggers.prompts import PromptData
from eval_viewer.display.colors import PALETTE
from eval_viewer.display.composite import BAND, composite

GREY = 128
H, W = 64, 80


def grey(t: int | None = None) -> np.ndarray:
    shape = (3, H, W) if t is None else (t, 3, H, W)
    return np.full(shape, GREY, dtype=np.uint8)


def color(object_id: int) -> tuple[int, int, int]:
    return PALETTE[1 + object_id]  # object k: palette entry of class k + 1 (fewer than 15 objects here)


def blend(rgb: tuple[int, int, int], opacity: float = 0.5) -> tuple[int, ...]:
    return tuple(int(np.rint((1 - opacity) * GREY + opacity * c)) for c in rgb)


def at(result, panel: str, x: float, y: float, frame: int = 0) -> tuple[int, ...]:  # noqa: ANN001
    box = next(p for p in result.panels if p.name == panel and p.frame == frame)
    col, row = box.to_pixel(x, y)
    return tuple(int(v) for v in result.rgb[row, col])


def test_every_prompt_type_is_drawn_where_and_as_it_must_be() -> None:
    mask = np.zeros((H, W), dtype=bool)
    mask[40:60, 5:25] = True
    prompts = [
        PromptData.point([[20, 20], [60, 12], [70, 50]], labels=[1, 0, -1], object_id=0),
        PromptData.box_prompt([40, 30, 76, 60], object_id=1),
        PromptData.mask_prompt(mask, object_id=2),
    ]
    result = composite(grey(), prompts=prompts)
    assert [p.name for p in result.panels] == ["input + prompts"]
    assert result.rgb.shape[0] == BAND + result.panels[0].height
    panel = "input + prompts"
    assert at(result, panel, 20, 20) == color(0)  # positive point: a filled disc in the object's colour...
    assert at(result, panel, 20 + 2 / result.panels[0].sx, 20) == color(0)  # ...filled around its centre
    assert at(result, panel, 60, 12) == color(0)  # negative point: an x, crossing at the point...
    assert at(result, panel, 60 + 3 / result.panels[0].sx, 12) != color(0)  # ...not a disc: the shape tells them apart
    assert at(result, panel, 70, 50) == (GREY,) * 3  # padding point: not drawn
    assert at(result, panel, 58, 30) == color(1)  # box: its top edge
    assert at(result, panel, 40, 45) == color(1)  # its left edge
    assert at(result, panel, 58, 45) == (GREY,) * 3  # not filled
    assert at(result, panel, 5, 50) == color(2)  # mask prompt: its outline (left edge)
    assert at(result, panel, 15, 50) == (GREY,) * 3  # not its inside


def test_ground_truth_and_sigmoid_predictions_per_object() -> None:
    gt = np.zeros((2, H, W), dtype=np.uint8)
    gt[0, 5:30, 5:30] = 1
    gt[1, 30:60, 40:75] = 1
    logits = np.full((2, H, W), -4.0, dtype=np.float32)
    logits[0, 5:30, 5:30] = 0.2  # sigmoid 0.55: above the 0.5 threshold
    logits[1, 30:60, 40:75] = -0.2  # sigmoid 0.45: below it, so object 1 is missed
    result = composite(grey(), gt=gt, pred=logits, prompts=[PromptData.point([[70, 10]], object_id=1)])
    assert [p.name for p in result.panels] == ["input + prompts", "ground truth", "prediction"]
    assert at(result, "ground truth", 15, 15) == blend(color(0))
    assert at(result, "ground truth", 55, 45) == blend(color(1))
    assert at(result, "ground truth", 35, 10) == (GREY,) * 3
    assert at(result, "prediction", 15, 15) == blend(color(0))
    assert at(result, "prediction", 55, 45) == (GREY,) * 3
    assert at(result, "prediction", 70, 10) == color(1)  # prompts are drawn beside the prediction too
    higher = composite(grey(), pred=logits, threshold=0.4)
    assert at(higher, "prediction", 55, 45) == blend(color(1))


def test_argmax_predictions_and_class_map_ground_truth_keep_class_colours() -> None:
    gt = np.zeros((H, W), dtype=np.int64)
    gt[10:50, 10:40] = 3
    logits = np.zeros((4, H, W), dtype=np.float32)
    logits[0] = 1.0
    logits[2, 10:50, 10:40] = 5.0  # predicted class 2 where the truth is class 3
    result = composite(grey(), gt=gt, pred=logits, activation="argmax")
    assert at(result, "ground truth", 25, 30) == blend(PALETTE[3])
    assert at(result, "prediction", 25, 30) == blend(PALETTE[2])
    assert at(result, "prediction", 60, 55) == (GREY,) * 3


def test_clip_strip_keeps_strided_frames_and_draws_each_frame_its_prompts() -> None:
    gt = np.zeros((7, 1, H, W), dtype=np.uint8)
    gt[4, 0, 20:40, 20:40] = 1
    prompts = [PromptData.point([[30, 30]], object_id=0, frame=2), PromptData.box_prompt([5, 5, 20, 20], frame=None)]
    result = composite(grey(7), gt=gt, prompts=prompts, frame_stride=2, max_frames=3)
    assert result.frames == (0, 2, 4)
    assert sorted({(p.name, p.frame) for p in result.panels}) == sorted(
        (name, t) for name in ("input + prompts", "ground truth") for t in (0, 2, 4))
    rows = {p.name: p.y0 for p in result.panels}
    assert rows["input + prompts"] < rows["ground truth"]  # one row per panel kind, frames as columns
    assert len({p.x0 for p in result.panels}) == 3
    assert at(result, "input + prompts", 30, 30, frame=2) == color(0)
    assert at(result, "input + prompts", 30, 30, frame=0) == (GREY,) * 3  # given on frame 2 only
    assert at(result, "input + prompts", 12, 5, frame=4) == color(0)  # a prompt of every frame
    assert at(result, "ground truth", 30, 30, frame=4) == blend(color(0))
    assert at(result, "ground truth", 30, 30, frame=2) == (GREY,) * 3


def test_a_large_input_is_shrunk_and_a_small_one_enlarged_with_prompts_following() -> None:
    big = np.full((3, 1000, 600), GREY, dtype=np.uint8)
    result = composite(big, prompts=[PromptData.point([[300, 500]])], max_side=200)
    box = result.panels[0]
    assert max(box.width, box.height) == 200
    assert at(result, "input + prompts", 300, 500) == color(0)
    small = composite(np.full((3, 16, 16), GREY, dtype=np.uint8), prompts=[PromptData.point([[8, 8]])], min_side=128)
    assert small.panels[0].width == 128 and at(small, "input + prompts", 8, 8) == color(0)


@pytest.mark.parametrize("kwargs, message", [
    ({"type": "point", "points": np.zeros((3, 3))}, "points must have shape (K, 2)"),
    ({"type": "point", "points": [[1, 2]], "labels": [1, 1]}, "1 points but labels"),
    ({"type": "point", "points": [[1, 2]], "labels": [2]}, "point labels must be 1"),
    ({"type": "box", "box": [5, 5, 1, 1]}, "is not [x0, y0, x1, y1]"),
    ({"type": "mask", "mask": np.zeros((2, 3, 4))}, "mask must have shape (H, W)"),
    ({"type": "circle"}, "type must be"),
])
def test_bad_prompts_say_what_is_wrong(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
                       .replace("]", r"\]")):
        PromptData(**kwargs)


def test_prompts_round_trip_through_their_page_form() -> None:
    prompt = PromptData.point([[1.5, 2.0]], labels=[0], object_id=3, frame=4)
    again = PromptData.from_dict(prompt.to_dict())
    assert again.object_id == 3 and again.frame == 4 and again.labels.tolist() == [0]
    assert np.array_equal(again.points, prompt.points)
    drawn = composite(grey(), prompts=[prompt.to_dict() | {"frame": None}])  # the page form draws the same
    assert at(drawn, "input + prompts", 1.5, 2.0) == color(3)


def test_titles_too_wide_for_a_small_panel_are_shortened_not_cut() -> None:
    """A 48 px snapshot (the example's) cannot hold "input + prompts": its band says "input" in full."""
    from eval_viewer.display.composite import _band

    def ink_right_edge(band: np.ndarray) -> int:
        cols = np.flatnonzero((band > 200).all(axis=2).any(axis=0))
        return int(cols.max()) if cols.size else -1

    wide, narrow = _band(200, "input + prompts"), _band(48, "input + prompts")
    assert ink_right_edge(wide) > 48  # the full title is wider than the small panel
    assert 0 < ink_right_edge(narrow) < 48 - 1  # the short one fits, with its last letter whole
    assert (narrow == _band(48, "input")).all()
