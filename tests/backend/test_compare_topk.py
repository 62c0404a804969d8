"""Comparing attention saved in the capture's top-k form (the default budget keeps only each query's largest weights
for most of SAM2's modules): written by our own capture, the same attention module captured twice per pass, once as
full maps and once as top-k, so the full maps are the oracle: the top-k JSD is a lower bound of the maps' JSD and
equals it when ``top_k`` covers every key; entropies are the maps' (the capture's own summary over every query);
top-k mass is exact; the pass-wide summary gives the paired view's figures."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from eval_viewer.backend import LogStore, PassKey
from eval_viewer.backend.compare import TOPK_NOTE, compare_items
from eval_viewer.backend.summary import compute_summary
from eval_viewer.debuggers import AttentionDebugger, SequentialDebugger
from eval_viewer.log_format import DEBUGGER_DIR, EVALUATION_SCORES, write_scores

N, TOKENS, HEADS = 10, 12, 2


class Block(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = torch.nn.MultiheadAttention(16, HEADS, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(x, x, x, need_weights=False)[0]


def _write(run: Path, noise: float, top_k: int) -> None:
    """One evaluator pass; ``noise`` perturbs the weights (a 'quantized' copy of the same model)."""
    torch.manual_seed(0)
    model = Block().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(noise * torch.randn_like(p))
    x = torch.randn(N, TOKENS, 16, generator=torch.Generator().manual_seed(1))
    config = [{"name": "maps", "debugger_config": {"class": AttentionDebugger,
                                                   "args": {"layer_name": "attn", "max_bytes": None}}},
              {"name": "top", "debugger_config": {"class": AttentionDebugger,
                                                  "args": {"layer_name": "attn", "max_bytes": 0, "top_k": top_k}}}]
    with SequentialDebugger(config, model, page_size_mb=0.005) as debugger, torch.no_grad():
        debugger.enabled = True
        for start in range(0, N, 4):
            idx = list(range(start, min(start + 4, N)))
            model(x[idx])
            debugger({"inputs": {"x": x[idx]}, "meta_info": {"idx": torch.tensor(idx)}}, model)
        write_scores(run / EVALUATION_SCORES, {"m": 0.0}, {"m": np.zeros(N)})
        debugger.save_all(run / DEBUGGER_DIR)


@pytest.fixture(scope="module", params=[4, TOKENS], ids=["top-4", "every-key"])
def store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> LogStore:
    root = tmp_path_factory.mktemp(f"topk{request.param}")
    _write(root / "fp", 0.0, request.param)
    _write(root / "q8", 0.05, request.param)
    with LogStore(root, cache_dir=root / ".cache", rescan_s=0, index_wait_s=30) as s:
        s.top_k = request.param  # (what the pages were written with, for the assertions)
        yield s


def _by_layer(store: LogStore, idx: int) -> dict[str, object]:
    return {c.layer: c for c in compare_items(store.datapoint(("fp", "test"), idx), store.datapoint(("q8", "test"), idx))}


def test_top_k_jsd_bounds_the_maps_and_entropies_and_mass_are_the_maps(store: LogStore) -> None:
    record = store.datapoint(("fp", "test"), 0)
    assert record.debug_item("top", "attention").value["form"] == "top_k"
    assert record.debug_item("maps", "attention").value["form"] == "map"
    for idx in range(N):
        found = _by_layer(store, idx)
        maps, top = found["maps/attention"], found["top/attention"]
        assert top.note == TOPK_NOTE and maps.note == ""
        exact = store.top_k == TOKENS
        jsd_maps, jsd_top = np.asarray(maps.metrics["jsd"]), np.asarray(top.metrics["jsd"])
        assert (jsd_maps > 1e-6).all(), "the perturbed model really attends differently"
        if exact:  # every key kept: no bucket left over, the bound is the JSD
            np.testing.assert_allclose(jsd_top, jsd_maps, rtol=1e-5)
        else:
            assert (jsd_top <= jsd_maps * (1 + 1e-5)).all() and (jsd_top > 0).all()
        for name in ("entropy_a", "entropy_b"):  # the capture's float32 summaries: to float32 precision
            np.testing.assert_allclose(top.metrics[name], maps.metrics[name], rtol=1e-5, err_msg=name)
        for name in ("topk_a", "topk_b"):  # top-5 mass: known when at least 5 keys per query were saved
            if store.top_k >= 5:
                np.testing.assert_allclose(top.metrics[name], maps.metrics[name], rtol=1e-6, err_msg=name)
            else:
                assert np.isnan(top.metrics[name]).all(), name
        assert np.asarray(top.metrics["jsd_max"]).shape == (HEADS,)


@pytest.mark.parametrize("workers", [0, 2])
def test_the_pass_summary_gives_the_paired_views_top_k_figures(store: LogStore, workers: int) -> None:
    summary = compute_summary(store, PassKey("fp", "test"), PassKey("q8", "test"), workers=workers)
    assert any(TOPK_NOTE in note for note in summary.notes)
    rows = {(r.layer, r.head): r for r in summary.table()}
    assert {("top/attention", h) for h in range(HEADS)} <= set(rows)
    for row, idx in enumerate(summary.idx_a.tolist()):
        metrics = _by_layer(store, idx)["top/attention"].metrics
        for name, value in metrics.items():
            np.testing.assert_allclose(summary.arrays["top/attention"][name][row], value, rtol=1e-9, err_msg=name)
    assert math.isfinite(rows["top/attention", 0].score)


def test_the_paired_view_shows_the_bound_and_says_why(store: LogStore) -> None:
    from eval_viewer.display.html import to_html
    from eval_viewer.display.paired import internals_table

    found = _by_layer(store, 0)
    top = to_html(internals_table(found["top/attention"]))
    maps = to_html(internals_table(found["maps/attention"]))
    assert "JSD ≥ (bits)" in top and "lower bound" in top and "not compared" not in top
    assert "JSD (bits)" in maps and "≥" not in maps
