"""The overview's metric-history figure, without a browser: every run is named once, in the legend, and two
evaluator runs at the same value stay told apart (they were labelled by text drawn on the plot, on top of each
other, for the example's full-precision and quantized runs)."""

from __future__ import annotations

from eval_viewer.app.figures import history_figure


def test_runs_at_the_same_value_are_named_in_the_legend_not_over_each_other() -> None:
    histories = {"trainer": [(0, 0.3), (1, 0.5), (2, 0.6)], "fp32": [(None, 0.5412)], "int8": [(None, 0.5412)]}
    fig = history_figure(histories, "miou", selected_run="trainer", selected_epoch=2)
    assert [t.name for t in fig.data] == ["trainer", "fp32  0.5412", "int8  0.5412"]  # trainer runs first
    assert not fig.layout.annotations  # no run label drawn on the plot
    assert fig.layout.showlegend
    fp32, int8 = fig.data[1], fig.data[2]
    assert list(fp32.x) == list(int8.x) == [0, 2]  # across the trainer's epochs
    assert list(fp32.y) == list(int8.y) == [0.5412, 0.5412]
    assert fp32.line.dash != int8.line.dash and fp32.line.color != int8.line.color


def test_evaluator_runs_alone_have_no_epoch_axis_and_one_run_needs_no_legend() -> None:
    fig = history_figure({"a": [(None, 0.2)], "b": [(None, 0.4)], "c": [(None, float("nan"))]}, "loss")
    assert [t.name for t in fig.data] == ["a  0.2", "b  0.4"]  # a NaN level is not drawn
    assert fig.layout.xaxis.visible is False and not fig.layout.xaxis.title.text
    single = history_figure({"trainer": [(0, 1.0), (1, 0.5)]}, "loss")
    assert not single.layout.showlegend
    assert history_figure({}, "loss").layout.annotations[0].text == "No aggregated 'loss' in any run"
