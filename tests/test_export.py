"""The offline failure report (``python -m eval_viewer export``, ``Logs.export``): which datapoints, in which order,
what each shows, and that the page needs nothing but itself (and ``plotly.min.js`` beside it in directory mode).

The ranking oracle is computed here from the scores files as written (NaN first, lower-is-better metrics flipped),
not through the backend the report uses. The browser side (every image loaded, every figure drawn, no request) is
tests/app/test_export_browser.py.
"""

from __future__ import annotations

import json
import re
import math
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import plotly
import pytest

import eval_viewer
from eval_viewer.cli import build_parser, main
from eval_viewer.display.html import PLOTLYJS_FILE

sys.path.insert(0, str(Path(__file__).resolve().parent / "app"))
from app_logs import REFERENCE_N, reference_scores, write_reference_log  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "data" / "example"
BUNDLE = Path(plotly.__file__).parent / "package_data" / PLOTLYJS_FILE


class Page(HTMLParser):
    """What a test needs from a report: its sections in order, contents links, pictures, scripts, figures."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.sections: list[dict[str, str]] = []
        self.ids: set[str] = set()
        self.links: list[str] = []
        self.images: list[str] = []
        self.script_srcs: list[str] = []
        self.classes: list[str] = []
        self.figures = text.count("Plotly.newPlot(")
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.classes.extend(a.get("class", "").split())
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "section" and "ev-report-entry" in a.get("class", "").split():
            self.sections.append(a)
        elif tag == "a":
            self.links.append(a.get("href", ""))
        elif tag == "img":
            self.images.append(a.get("src", ""))
        elif tag == "script" and "src" in a:
            self.script_srcs.append(a["src"])


def worst_first(values: list[float | None], higher_is_better: bool, k: int) -> list[int]:
    """The oracle: indices worst first, NaN/None before everything, ties by index."""
    def badness(i: int) -> tuple[int, float, int]:
        v = values[i]
        if v is None or math.isnan(v):
            return (0, 0.0, i)
        return (1, v if higher_is_better else -v, i)
    return sorted(range(len(values)), key=badness)[:k]


def example_scores(path: str) -> dict[str, list[float | None]]:
    return json.loads((EXAMPLE / path).read_text())["per_datapoint"]


def export(tmp_path: Path, log_dir: Path, *args: str) -> tuple[int, Path]:
    out = tmp_path / "report"
    code = main(["export", "--log-dir", str(log_dir), "--out", str(out), "--cache-dir", str(tmp_path / "cache"),
                 "--quiet", *args])
    return code, out


def check_self_contained(page: Page, text: str, plotlyjs: str) -> None:
    """Every picture a PNG data URL, every link an anchor on the page, no script from elsewhere."""
    assert page.images and all(src.startswith("data:image/png;base64,") for src in page.images)
    assert page.links and all(href.startswith("#") and href[1:] in page.ids for href in page.links)
    assert page.script_srcs == ([] if plotlyjs == "inline" else [PLOTLYJS_FILE])
    assert "http://" not in " ".join(page.script_srcs + page.images + page.links)
    if plotlyjs == "inline":
        assert BUNDLE.read_text(encoding="utf-8")[:2000] in text  # the installed bundle itself, inside the page


@pytest.mark.skipif(not EXAMPLE.is_dir(), reason="data/example is missing")
def test_example_run_worst_first_with_every_view(tmp_path: Path) -> None:
    k = 6
    code, out = export(tmp_path, EXAMPLE, "--run", "trainer_run", "--epoch", "9", "--metric", "miou",
                       "--worst", str(k))
    assert code == 0
    text = (out / "report.html").read_text(encoding="utf-8")
    page = Page(text)
    expected = worst_first(example_scores("trainer_run/epoch_9/validation_scores.json")["miou"], True, k)
    assert [int(s["data-idx"]) for s in page.sections] == expected
    assert [s["id"] for s in page.sections] == [f"dp-{i}" for i in expected]
    assert [href for href in page.links if href != "#ev-report-toc"] == [f"#dp-{i}" for i in expected]
    for cls in ("ev-section-inputs", "ev-section-labels", "ev-section-meta-info", "ev-section-debug-outputs",
                "ev-card", "ev-score-chosen"):
        assert page.classes.count(cls) >= k, cls
    # every debugger of the example saved something for each datapoint, and each card is on the page
    assert page.classes.count("ev-card") == 5 * k
    assert page.figures > 0
    check_self_contained(page, text, "inline")
    assert not (out / PLOTLYJS_FILE).exists()


def test_reference_log_lower_is_better_and_nan_first_directory_mode(tmp_path: Path) -> None:
    logs = write_reference_log(tmp_path / "logs")
    code, out = export(tmp_path, logs, "--run", "ref_run", "--metric", "iou", "--worst", "3",
                       "--plotlyjs", "directory")
    assert code == 0
    text = (out / "report.html").read_text(encoding="utf-8")
    page = Page(text)
    iou = reference_scores(logs, 2)["iou"]  # the latest epoch is the default pass
    assert [int(s["data-idx"]) for s in page.sections] == worst_first(iou, True, 3)
    assert int(page.sections[0]["data-idx"]) == 5  # its iou is missing: a failure, first
    assert (out / PLOTLYJS_FILE).read_bytes() == BUNDLE.read_bytes()
    assert len(text) < len(BUNDLE.read_text(encoding="utf-8"))  # the bundle is beside the page, not in it
    check_self_contained(page, text, "directory")

    code, out = export(tmp_path, logs, "--run", "ref_run", "--split", "val", "--epoch", "0", "--metric", "loss",
                       "--worst", str(REFERENCE_N + 5))
    assert code == 0
    page = Page((out / "report.html").read_text(encoding="utf-8"))
    loss = reference_scores(logs, 0)["loss"]
    assert [int(s["data-idx"]) for s in page.sections] == worst_first(loss, False, REFERENCE_N)  # largest loss first


@pytest.mark.skipif(not EXAMPLE.is_dir(), reason="data/example is missing")
def test_paired_report_shows_both_passes_and_the_deltas(tmp_path: Path) -> None:
    code, out = export(tmp_path, EXAMPLE, "--run", "evaluator_run", "--metric", "miou", "--worst", "4",
                       "--vs-run", "quantized_run")
    assert code == 0
    text = (out / "report.html").read_text(encoding="utf-8")
    page = Page(text)
    a = example_scores("evaluator_run/evaluation_scores.json")["miou"]
    b = example_scores("quantized_run/evaluation_scores.json")["miou"]
    expected = worst_first(a, True, 4)
    assert [int(s["data-idx"]) for s in page.sections] == expected
    assert page.classes.count("ev-paired") == 4 and page.classes.count("ev-twin-b") > 4
    assert "pass b: quantized_run · test" in text and "paired with quantized_run · test by index" in text
    for i in expected:  # the contents row of each datapoint carries both scores and the delta b - a
        delta = b[i] - a[i]
        assert f"{'+' if delta > 0 else ''}{delta:.4g}" in text
    check_self_contained(page, text, "inline")


@pytest.mark.skipif(not EXAMPLE.is_dir(), reason="data/example is missing")
def test_notebook_api_writes_the_same_report(tmp_path: Path) -> None:
    with eval_viewer.open(EXAMPLE, cache_dir=tmp_path / "cache") as logs:
        path = logs.export(("trainer_run", "val", 4), "loss", 3, tmp_path / "api", vs=("trainer_run", "val", 9),
                           plotlyjs="directory", progress=False)
    page = Page(path.read_text(encoding="utf-8"))
    loss = example_scores("trainer_run/epoch_4/validation_scores.json")["loss"]
    assert [int(s["data-idx"]) for s in page.sections] == worst_first(loss, False, 3)
    assert page.classes.count("ev-paired") == 3 and (path.parent / PLOTLYJS_FILE).is_file()


@pytest.mark.skipif(not EXAMPLE.is_dir(), reason="data/example is missing")
def test_unknown_metric_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "eval_viewer", "export", "--log-dir", str(EXAMPLE), "--run", "trainer_run",
         "--metric", "accuracy", "--worst", "3", "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "c")],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "eval-viewer: error: No metric 'accuracy' in trainer_run · val 9 (metrics: miou, pixel_accuracy, iou[0], "
        "iou[1], iou[2], iou[3], loss)"]
    assert not (tmp_path / "out").exists()


def test_unknown_run_pass_and_bad_choices_name_what_there_is(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    logs = write_reference_log(tmp_path / "logs")
    cases = [
        (["--run", "nope", "--metric", "iou"], "No run named 'nope' (runs: ref_run)"),
        (["--run", "ref_run", "--epoch", "1", "--metric", "iou"],
         "Run 'ref_run' has no pass val step 1 (passes: epoch 0, epoch 2)"),
        (["--run", "ref_run", "--split", "test", "--metric", "iou"], "Run 'ref_run' has no pass test"),
        (["--run", "ref_run", "--metric", "iou", "--vs-epoch", "2"], "--vs names the report's own pass"),
        (["--run", "ref_run", "--metric", "iou", "--worst", "0"], "--worst must be at least 1, got 0"),
    ]
    for args, message in cases:
        code, out = export(tmp_path, logs, *args)
        err = capsys.readouterr().err.strip()
        assert code == 2 and err.startswith("eval-viewer: error: ") and message in err, (args, err)
        assert not (out / "report.html").exists()
    with pytest.raises(SystemExit) as exit_info:  # argparse's own choices: also exit 2
        export(tmp_path, logs, "--run", "ref_run", "--metric", "iou", "--plotlyjs", "cdn")
    assert exit_info.value.code == 2


def test_export_is_a_subcommand_beside_the_viewer(capsys) -> None:  # noqa: ANN001
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "--help"])
    assert exit_info.value.code == 0
    usage = capsys.readouterr().out
    assert usage.startswith("usage: eval-viewer export") and "--plotlyjs {inline,directory}" in usage
    assert "eval-viewer export --help" in build_parser().format_help()
    args = build_parser().parse_args(["--log-dir", "x"])  # the viewer is still the default command
    assert args.log_dir == ["x"]


def test_health_flags_of_a_planted_problem_show_beside_its_datapoint(tmp_path: Path) -> None:
    """Datapoint 3's feature map is NaN from one channel on, datapoint 7's is all zeros: their sections and contents
    rows say so, and no other datapoint's does."""
    import joblib
    import numpy as np

    logs = write_reference_log(tmp_path / "logs")
    page_path = logs / "ref_run" / "epoch_2" / "debugger" / "page_0.pkl"
    page = joblib.load(page_path)
    page[3]["features"][2:] = np.nan
    page[4]["features"][:] = 0.0
    joblib.dump(page, page_path)
    code, out = export(tmp_path, logs, "--run", "ref_run", "--metric", "iou", "--worst", str(REFERENCE_N))
    assert code == 0
    text = (out / "report.html").read_text(encoding="utf-8")
    sections = {int(m[1]): m[2] for m in re.finditer(r'<section id="dp-(\d+)"(.*?)(?=<section id="dp-|$)', text,
                                                      flags=re.S)}
    assert sorted(sections) == list(range(REFERENCE_N))
    badges = {idx: re.findall(r'ev-report-flag">([^<]*)<', body) for idx, body in sections.items()}
    assert badges[3] == ["⚠ features: NaN 75 %"]
    assert badges[4] == ["⚠ features: dead 100 %"]
    assert all(not found for idx, found in badges.items() if idx not in (3, 4))
    cards = {idx: re.findall(r'ev-health-badge ev-health-(\w+)"', body) for idx, body in sections.items()}
    assert cards[3] == ["nan"] and cards[4] == ["dead"]  # and on the features card, as in the app
    assert re.search(r'data-debugger="features"><h3[^>]*>features</h3><div class="ev-health-badges" '
                     r'data-health="nan">', sections[3])
    assert all(not found for idx, found in cards.items() if idx not in (3, 4))
    assert re.search(r'href="#dp-3">datapoint 3</a></td><td>[^<]*</td><td>nan ×1</td>', text)
    assert re.search(r'href="#dp-4">datapoint 4</a></td><td>[^<]*</td><td>dead ×1</td>', text)
