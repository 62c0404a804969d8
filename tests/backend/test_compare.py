"""Comparing passes: divergences against scipy, deltas and alignment on crafted logs, internals and the pass summary."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.stats import entropy as scipy_entropy

from eval_viewer.backend.compare import (
    CompareError,
    Thresholds,
    align,
    attention_metrics,
    attention_weights,
    common_failures,
    compare_items,
    deltas,
)
from eval_viewer.backend.divergence import cosine_similarity, entropy, half_to_float, js_divergence, relative_error, \
    sqnr_db, top_k_mass
from eval_viewer.backend.model import PassKey
from eval_viewer.backend.summary import LayerSummary, SummaryJobs, alignment_for, compute_summary
from eval_viewer.log_format import DEBUGGER_DIR, EVALUATION_SCORES, FORMAT_VERSION, INDEX_DEBUGGERS, INDEX_META, \
    INDEX_PAGES, index_name, page_name

RNG = np.random.default_rng(7)
EDGE_CASES = [
    (np.eye(6)[2], np.eye(6)[2]),  # the same one-hot
    (np.eye(6)[0], np.eye(6)[5]),  # disjoint one-hots: 1 bit
    (np.full(6, 1 / 6), np.eye(6)[3]),  # uniform vs one-hot
    (np.full(6, 1 / 6), np.full(6, 1 / 6)),
    (np.array([0.5, 0.5, 0, 0]), np.array([0.1, 0.2, 0.3, 0.4])),  # zeros on one side
    (np.array([0, 0, 3.0, 1.0]), np.array([2.0, 2.0, 0, 0])),  # unnormalised, disjoint
]


# ------------------------------------------------------------------------------------------------------ divergences
@pytest.mark.parametrize("p, q", EDGE_CASES + [(RNG.random(9), RNG.random(9)) for _ in range(5)])
def test_js_divergence_is_scipy_jensenshannon_squared_in_bits(p: np.ndarray, q: np.ndarray) -> None:
    assert js_divergence(p, q) == pytest.approx(jensenshannon(p, q, base=2) ** 2, abs=1e-12)
    assert js_divergence(q, p) == pytest.approx(js_divergence(p, q), abs=1e-12)
    assert 0.0 <= float(js_divergence(p, q)) <= 1.0


def test_js_divergence_vectorised_over_heads_and_queries() -> None:
    p, q = RNG.random((3, 7, 11)), RNG.random((3, 7, 11))
    expected = jensenshannon(p, q, base=2, axis=-1) ** 2
    np.testing.assert_allclose(js_divergence(p, q), expected, atol=1e-12)
    assert js_divergence(np.eye(4)[0], np.eye(4)[1]) == pytest.approx(1.0)


@pytest.mark.parametrize("p", [p for p, _ in EDGE_CASES] + [RNG.random(13) for _ in range(5)])
def test_entropy_is_scipy_entropy_in_bits(p: np.ndarray) -> None:
    assert entropy(p) == pytest.approx(scipy_entropy(p, base=2), abs=1e-12)


def test_entropy_and_top_k_on_known_distributions() -> None:
    assert entropy(np.full(8, 1 / 8)) == pytest.approx(3.0)
    assert entropy(np.eye(8)[4]) == pytest.approx(0.0)
    assert top_k_mass(np.eye(8)[4], 1) == pytest.approx(1.0)
    assert top_k_mass(np.full(8, 1 / 8), 3) == pytest.approx(3 / 8)
    assert top_k_mass(np.array([1.0, 3.0, 0.0, 4.0]), 2) == pytest.approx(7 / 8)
    assert top_k_mass(np.array([1.0, 3.0]), 5) == pytest.approx(1.0)
    rows = RNG.random((4, 10))
    expected = np.sort(rows / rows.sum(-1, keepdims=True), axis=-1)[:, -3:].sum(-1)
    np.testing.assert_allclose(top_k_mass(rows, 3), expected)


def test_an_empty_row_is_nan_not_an_answer() -> None:
    assert math.isnan(float(js_divergence(np.zeros(4), np.full(4, 0.25))))
    assert math.isnan(float(entropy(np.zeros(4))))
    assert math.isnan(float(top_k_mass(np.zeros(4), 2)))


def test_sqnr_cosine_relative_error_on_known_arrays() -> None:
    a = np.array([3.0, 4.0])
    b = np.array([3.0, 4.5])  # noise 0.25, signal 25: 20 dB
    assert sqnr_db(a, b) == pytest.approx(20.0)
    assert relative_error(a, b) == pytest.approx(0.1)
    assert cosine_similarity(a, np.array([-4.0, 3.0])) == pytest.approx(0.0)
    assert cosine_similarity(a, 2 * a) == pytest.approx(1.0)
    assert cosine_similarity(a, -a) == pytest.approx(-1.0)
    assert sqnr_db(a, a) == math.inf
    x = RNG.standard_normal((4, 5, 6))
    noise = 1e-2 * RNG.standard_normal(x.shape)
    assert sqnr_db(x, x + noise) == pytest.approx(10 * np.log10((x ** 2).sum() / (noise ** 2).sum()))
    with pytest.raises(ValueError, match="shapes differ"):
        sqnr_db(a, np.ones(3))


def test_attention_metrics_per_head_equal_scipy_row_by_row() -> None:
    wa, wb = RNG.random((3, 7, 11)) ** 3, RNG.random((3, 7, 11)) ** 3
    wb[1, 2] = np.eye(11)[4]  # a one-hot row
    wa[2, 0] = 0.0  # nothing captured for one query in pass a: that query is left out of every mean
    m = attention_metrics(wa.astype(np.float32), wb.astype(np.float32), k=3)
    for h in range(3):
        rows = [r for r in range(7) if wa[h, r].sum() > 0]
        jsd = [jensenshannon(wa[h, r], wb[h, r], base=2) ** 2 for r in rows]
        assert m["jsd"][h] == pytest.approx(np.mean(jsd), abs=1e-5)
        assert m["jsd_max"][h] == pytest.approx(np.max(jsd), abs=1e-5)
        assert m["entropy_a"][h] == pytest.approx(np.mean([scipy_entropy(wa[h, r], base=2) for r in rows]), abs=1e-5)
        assert m["entropy_b"][h] == pytest.approx(np.mean([scipy_entropy(wb[h, r], base=2) for r in rows]), abs=1e-5)
        assert m["topk_b"][h] == pytest.approx(np.mean(top_k_mass(wb[h, rows], 3)), abs=1e-5)


def _rows_reference(wa: np.ndarray, wb: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """The per-head figures computed row by row with scipy in float64 (left-out rows: empty in either pass)."""
    wa, wb = wa.astype(np.float64), wb.astype(np.float64)
    lead = wa.shape[:-2]
    out = {name: np.full(lead, np.nan) for name in ("jsd", "jsd_max", "entropy_a", "entropy_b", "topk_a", "topk_b")}
    for pos in np.ndindex(*lead):
        rows = [r for r in range(wa.shape[-2]) if wa[pos][r].sum() > 0 and wb[pos][r].sum() > 0]
        if not rows:
            continue
        jsd = [jensenshannon(wa[pos][r], wb[pos][r], base=2) ** 2 for r in rows]
        out["jsd"][pos], out["jsd_max"][pos] = np.mean(jsd), np.max(jsd)
        out["entropy_a"][pos] = np.mean([scipy_entropy(wa[pos][r], base=2) for r in rows])
        out["entropy_b"][pos] = np.mean([scipy_entropy(wb[pos][r], base=2) for r in rows])
        out["topk_a"][pos] = np.mean(top_k_mass(wa[pos][rows], k))
        out["topk_b"][pos] = np.mean(top_k_mass(wb[pos][rows], k))
    return out


_TOLERANCE = {np.dtype(np.float16): {"rtol": 1e-4, "atol": 1e-9}, np.dtype(np.float32): {"rtol": 1e-4, "atol": 1e-9},
              np.dtype(np.float64): {"rtol": 1e-9, "atol": 1e-12}}
"""What the batched figures are held to against scipy: float16 and float32 captures are compared in float32."""


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("k", [1, 3, 16])
def test_attention_divergence_in_batches_equals_scipy(dtype: Any, k: int, monkeypatch: pytest.MonkeyPatch) -> None:
    from eval_viewer.backend import divergence

    monkeypatch.setattr(divergence, "_CHUNK", 40)  # several chunks, one ending inside a datapoint...
    monkeypatch.setattr(divergence, "_COMPILED_CHUNK", 40)  # ...in the compiled loop's path too
    rng = np.random.default_rng(11)
    wa = rng.random((5, 2, 6, 16)) ** 6  # many weights below float16's normal range (subnormal halves)
    wb = wa + 0.2 * rng.random(wa.shape) ** 6
    wa[0, 1, 2] = np.eye(16)[3]  # one-hot against a spread row
    wb[1, 0, 4] = 0.0  # nothing captured for one query in pass b: left out
    wa[2, 1] = 0.0  # a whole head empty: NaN
    wa[3, 0, 0] = np.full(16, 1 / 16)  # uniform
    wa, wb = wa.astype(dtype), wb.astype(dtype)
    got = divergence.attention_divergence(wa, wb, k)
    expected = _rows_reference(wa, wb, k)
    for name, values in expected.items():
        assert got[name].shape == (5, 2)
        np.testing.assert_allclose(got[name], values, err_msg=name, **_TOLERANCE[np.dtype(dtype)])
    assert np.isnan(got["jsd"][2, 1]) and np.isnan(got["topk_a"][2, 1])
    same = divergence.attention_divergence(wa, wa, k)
    assert np.nanmax(same["jsd"]) == 0.0  # identical captures: exactly 0, not rounding noise


@pytest.mark.parametrize("kind", ["close", "far"])
def test_float32_jsd_keeps_its_digits_where_the_passes_nearly_agree_or_one_side_vanishes(kind: str) -> None:
    """float32 captures are compared in float32. Near-identical rows (weights 0.1 % apart: JSD about 1e-7 bits) are
    where the textbook ``H(m) - (H(p) + H(q)) / 2`` cancels to noise in float32; rows where some weights nearly
    vanish in one pass (10^-2 to 10^-8 of the other) are where ``atanh`` and ``log1p(-d²)`` approach their poles."""
    from eval_viewer.backend.divergence import attention_divergence

    rng = np.random.default_rng(8)
    p = rng.random((40, 2, 8, 64))
    if kind == "close":
        q = p * (1 + 1e-3 * rng.standard_normal(p.shape))
    else:
        q = p * np.where(rng.random(p.shape) < 0.3, 10.0 ** -rng.integers(2, 9, p.shape), 1.0)
    p32, q32 = p.astype(np.float32), q.astype(np.float32)
    got = attention_divergence(p32, q32)["jsd"]
    rows = [[jensenshannon(a, b, base=2) ** 2 for a, b in zip(pa, qa)]
            for pa, qa in zip(p32.astype(np.float64).reshape(-1, 8, 64), q32.astype(np.float64).reshape(-1, 8, 64))]
    expected = np.mean(rows, axis=1).reshape(40, 2)
    assert expected.min() > (1e-8 if kind == "close" else 0.05)
    np.testing.assert_allclose(got, expected, rtol=1e-4)


def test_attention_divergence_half_with_inf_or_negative_takes_the_plain_cast() -> None:
    from eval_viewer.backend.divergence import attention_divergence

    wa = np.full((1, 1, 2, 4), 0.25, dtype=np.float16)
    wb = wa.copy()
    wb[0, 0, 1, 2] = np.inf  # a broken capture: that query is left out, the other still counts
    got = attention_divergence(wa, wb, 2)
    assert got["jsd"][0, 0] == 0.0 and got["topk_b"][0, 0] == pytest.approx(0.5)
    wb[0, 0, 1] = [-0.0, 0.5, 0.25, 0.25]  # a sign bit (0x8000) does not masquerade as the largest half
    assert attention_divergence(wa, wb, 1)["topk_b"][0, 0] == pytest.approx((0.25 + 0.5) / 2)
    wb[0, 0, 1] = [-0.5, 0.5, 0.5, 0.5]  # not a distribution: that query is left out of every mean, as a NaN is
    got = attention_divergence(wa, wb, 1)
    assert got["jsd"][0, 0] == 0.0 and got["topk_b"][0, 0] == pytest.approx(0.25)
    assert got["entropy_b"][0, 0] == pytest.approx(2.0)


def test_tensor_divergence_in_batches_equals_the_single_figures() -> None:
    from eval_viewer.backend.divergence import tensor_divergence

    rng = np.random.default_rng(5)
    a = rng.standard_normal((6, 4, 3, 3)).astype(np.float16)
    b = (a + 0.05 * rng.standard_normal(a.shape)).astype(np.float16)
    a[1], b[1] = 0, 0  # both empty: no error, cosine 1
    b[2] = a[2]  # equal: SQNR +inf
    a[3] = 0  # reference empty, other not: NaN
    b[4] = -a[4]
    a[5, 0, 0, 0] = np.nan  # non-finite values count as 0
    got = tensor_divergence(a, b)
    for i in range(6):
        x = np.nan_to_num(a[i].astype(np.float64))
        y = np.nan_to_num(b[i].astype(np.float64))
        for name, fn in (("rel_error", relative_error), ("cosine", cosine_similarity), ("sqnr_db", sqnr_db)):
            want = fn(x, y)
            assert got[name][i] == pytest.approx(want, rel=1e-5, nan_ok=True), (name, i)  # (float32 for halves)
            assert tensor_divergence(a.astype(np.float64), b.astype(np.float64))[name][i] == \
                pytest.approx(want, rel=1e-12, nan_ok=True), (name, i)
    assert got["sqnr_db"][2] == math.inf and got["cosine"][4] == pytest.approx(-1.0)


def test_tensor_divergence_redoes_in_float64_the_pairs_whose_float32_sums_overflow() -> None:
    from eval_viewer.backend.divergence import tensor_divergence

    rng = np.random.default_rng(6)
    a = rng.standard_normal((3, 50)).astype(np.float32)
    a[1] *= np.float32(1e20)  # squares beyond float32's range
    b = a * np.float32(1.001)
    got = tensor_divergence(a, b)
    wide = tensor_divergence(a.astype(np.float64), b.astype(np.float64))
    for name in ("rel_error", "cosine", "sqnr_db"):
        assert np.isfinite(got[name]).all(), name
        np.testing.assert_allclose(got[name], wide[name], rtol=1e-5, err_msg=name)


def test_float32_cosine_keeps_its_digits_where_maps_nearly_agree() -> None:
    """A float32 map against its float16 copy: ``1 - cos`` is about 2e-8, below a float32 dot product's rounding;
    the cosine comes from the noise sum instead, so it stays at most 1 and close to float64's."""
    from eval_viewer.backend.divergence import tensor_divergence

    rng = np.random.default_rng(2)
    a = (1.0 + rng.standard_normal((64, 16, 16, 16))).astype(np.float32)
    b = a.astype(np.float16)
    got = tensor_divergence(a, b)["cosine"]
    wide = tensor_divergence(a.astype(np.float64), b.astype(np.float64))["cosine"]
    assert (got <= 1.0).all() and np.median(1 - wide) > 1e-8
    np.testing.assert_allclose(1 - got, 1 - wide, rtol=1e-3)


@pytest.mark.parametrize("scale", [1e-23, 1e-30])
def test_tiny_float32_maps_are_summed_in_float64(scale: float) -> None:
    """Squares of values this small vanish in float32; such pairs are summed in float64, so maps 1 % apart do not
    come out identical."""
    from eval_viewer.backend.divergence import tensor_divergence

    rng = np.random.default_rng(3)
    a = (scale * rng.standard_normal((4, 300))).astype(np.float32)
    b = (a * np.float32(1.01)).astype(np.float32)
    got = tensor_divergence(a, b)
    wide = tensor_divergence(a.astype(np.float64), b.astype(np.float64))
    for name in ("rel_error", "cosine", "sqnr_db"):
        np.testing.assert_allclose(got[name], wide[name], rtol=1e-6, err_msg=name)


def test_float32_attention_rows_of_extreme_totals_are_compared_in_float64() -> None:
    from eval_viewer.backend.divergence import attention_divergence

    p = np.array([[[1e-40, 1e-40, 0], [1e-30, 1e-30, 0], [3e38, 3e38, 1e38]]], dtype=np.float32)
    q = np.array([[[1e-40, 0, 1e-40], [1e-30, 0, 1e-30], [1, 1, 1]]], dtype=np.float32)
    for row in range(3):
        got = attention_divergence(p[:, row:row + 1], q[:, row:row + 1], 2)
        wide = attention_divergence(p[:, row:row + 1].astype(np.float64), q[:, row:row + 1].astype(np.float64), 2)
        for name, values in wide.items():
            assert np.isfinite(values).all(), (row, name)
            np.testing.assert_allclose(got[name], values, rtol=1e-5, err_msg=f"{row} {name}")


def test_figures_of_long_rows_do_not_depend_on_the_batch() -> None:
    """Past numpy's buffer (8,192 values) ``einsum`` splits a row where the buffer ends, which moves with the number
    of rows; a datapoint's figures must be the same alone (the paired view) as in a batch (the summary)."""
    from eval_viewer.backend.divergence import attention_divergence, tensor_divergence, tensor_metrics

    rng = np.random.default_rng(4)
    a = rng.random((3, 20_000)).astype(np.float32)
    b = (a + 0.01 * rng.random(a.shape)).astype(np.float32)
    batch = tensor_divergence(a, b)
    for i in range(3):
        assert tensor_metrics(a[i], b[i]) == {name: float(values[i]) for name, values in batch.items()}
    wa, wb = a.reshape(3, 1, 1, -1), b.reshape(3, 1, 1, -1)
    together = attention_divergence(wa, wb)
    alone = attention_divergence(wa[1:2], wb[1:2])
    assert all(np.array_equal(together[name][1:2], alone[name]) for name in together)


# -------------------------------------------------------------------------------------------------- alignment, deltas
def test_align_by_meta_key_counts_and_lists_unmatched() -> None:
    meta_a = {"image_id": ["x", "y", "z", None, "w", "y"]}  # idx 3 has no id, idx 5 repeats "y"
    meta_b = {"image_id": ["z", "q", "x", "w"]}
    al = align(6, 4, "image_id", meta_a, meta_b)
    assert list(zip(al.a.tolist(), al.b.tolist())) == [(0, 2), (2, 0), (4, 3)]
    assert al.unmatched_a.tolist() == [1, 3, 5] and al.unmatched_b.tolist() == [1]
    assert al.b_of(2) == 0 and al.a_of(3) == 4 and al.b_of(1) is None
    by_index = align(5, 3)
    assert by_index.a.tolist() == [0, 1, 2] and by_index.unmatched_a.tolist() == [3, 4]
    with pytest.raises(CompareError, match="image_id"):
        align(2, 2, "image_id", {"other": [1, 2]}, meta_b)


def test_deltas_rank_regressions_first_and_select_forgotten() -> None:
    a = np.array([0.9, 0.8, 0.2, 0.95, 0.5, np.nan, 0.85, 0.1])
    b = np.array([0.3, 0.82, 0.6, np.nan, 0.45, 0.7, 0.86, np.nan])
    d = deltas(a, b, "miou", True, thresholds=Thresholds(change=0.1, good=0.8, bad=0.4))
    assert d.order().tolist()[:3] == [3, 7, 0]  # became NaN (worst first, by index), then -0.6
    assert d.order("regressed").tolist() == [3, 7, 0]
    assert d.order("improved", worst_first=False).tolist() == [5, 2]  # NaN -> value first, then +0.4
    assert d.order("improved").tolist() == [2, 5]
    assert d.forgotten.tolist() == [True, False, False, True, False, False, False, False]
    assert d.counts()["forgotten"] == 2 and d.counts()["regressed"] == 3
    assert d.order("changed", worst_first=False).tolist()[:2] == [5, 2]
    np.testing.assert_allclose(d.delta[[0, 2]], [-0.6, 0.4])


def test_lower_is_better_flips_the_meaning() -> None:
    loss_a = np.array([0.1, 0.1, 1.0, 0.5])
    loss_b = np.array([0.9, 0.1, 0.2, 0.5])
    d = deltas(loss_a, loss_b, "loss", higher_is_better=False, thresholds=Thresholds(change=0.05, good=0.2, bad=0.6))
    assert d.regressed.tolist() == [True, False, False, False]
    assert d.improved.tolist() == [False, False, True, False]
    assert d.forgotten.tolist() == [True, False, False, False]
    assert d.order()[0] == 0


def test_default_thresholds_are_documented_percentiles() -> None:
    a = np.linspace(0, 1, 101)
    d = deltas(a, a[::-1], "acc")
    assert d.thresholds.change == pytest.approx(0.05 * 0.9)
    assert d.thresholds.good == pytest.approx(0.5) and d.thresholds.bad == pytest.approx(0.25)
    loss = deltas(a, a, "loss", higher_is_better=False)
    assert loss.thresholds.good == pytest.approx(0.5) and loss.thresholds.bad == pytest.approx(0.75)
    assert not loss.regressed.any() and not loss.forgotten.any()


def test_common_failures_count_passes() -> None:
    table = np.array([[0.1, 0.9, 0.5, 0.8], [0.2, 0.7, np.nan, 0.9], [0.05, 0.95, 0.6, 0.1]])
    cf = common_failures(table, "acc", True, percentile=25)
    assert cf.counts.tolist() == [3, 0, 1, 0]
    assert cf.order()[0] == 0
    loss = common_failures(-table, "loss", False, percentile=25)
    assert loss.counts.tolist() == cf.counts.tolist()


# -------------------------------------------------------------------------------------------------- on crafted logs
def _attention(rng: np.random.Generator, heads: int = 2, n: int = 9) -> np.ndarray:
    w = rng.random((heads, n, n)).astype(np.float32) ** 4
    return w / w.sum(-1, keepdims=True)


def write_run(root: Path, name: str, miou: list[float], ids: list[str], shift: float, seed: int = 0,
              per_page: int | None = None) -> Path:
    """An evaluator run: scores, and one page with an attention debugger and a feature map per datapoint; ``shift``
    perturbs the attention of head 1 and the feature map (a 'quantized' copy of the seed-0 run)."""
    run = root / name
    debug = run / DEBUGGER_DIR
    debug.mkdir(parents=True)
    (run / EVALUATION_SCORES).write_text(json.dumps(
        {"aggregated": {"miou": float(np.nanmean(miou))}, "per_datapoint": {"miou": miou}}))
    page: dict[int, Any] = {}
    for idx, image_id in enumerate(ids):
        rng = np.random.default_rng(1000 + int(image_id[3:]))  # the same image has the same internals
        att = _attention(rng)
        fmap = rng.standard_normal((4, 3, 3)).astype(np.float32)
        if shift:
            noise = np.random.default_rng(seed * 100 + idx).random(att.shape[1:]).astype(np.float32)
            att[1] = (1 - shift) * att[1] + shift * noise / noise.sum(-1, keepdims=True)
            fmap = fmap + shift * np.random.default_rng(idx).standard_normal(fmap.shape).astype(np.float32)
        page[idx] = {
            "record": {"inputs": {"image": rng.random((3, 6, 6), dtype=np.float32)},
                       "meta_info": {"idx": idx, "image_id": image_id}},
            "attn": {"attention": att, "note": "block 0"},
            "features": {"feature_map": fmap},
        }
    size = per_page or len(page)
    chunks = {page_name(k): list(page)[start:start + size] for k, start in enumerate(range(0, len(page), size))}
    for file, indices in chunks.items():
        joblib.dump({i: page[i] for i in indices}, debug / file)
    (debug / index_name(None)).write_text(json.dumps({
        "format_version": FORMAT_VERSION, "rank": None,
        INDEX_PAGES: {file: {"indices": indices, "bytes": 0} for file, indices in chunks.items()},
        INDEX_DEBUGGERS: {"attn": {"class": "t", "kinds": {"attention": "attention", "note": "text"}},
                          "features": {"class": "t", "kinds": {"feature_map": "feature_map"}}},
        INDEX_META: {str(i): {"image_id": v} for i, v in enumerate(ids)},
    }))
    return run


@pytest.fixture
def pair(tmp_path: Path, make_store: Any) -> Any:
    logs = tmp_path / "logs"
    write_run(logs, "fp", [0.9, 0.8, 0.7, 0.6, 0.5], ["img0", "img1", "img2", "img3", "img4"], 0.0)
    write_run(logs, "q8", [0.2, 0.65, 0.5, 0.9], ["img3", "img1", "img0", "img9"], 0.3, seed=1)
    return make_store(logs)


def test_internals_of_one_datapoint_match_by_debugger_and_key(pair: Any) -> None:
    a, b = PassKey("fp", "test"), PassKey("q8", "test")
    same = compare_items(pair.datapoint(a, 1), pair.datapoint(a, 1))
    by_layer = {c.layer: c for c in same}
    assert set(by_layer) >= {"attn/attention", "features/feature_map"}
    np.testing.assert_allclose(by_layer["attn/attention"].metrics["jsd"], [0, 0], atol=1e-9)
    assert by_layer["features/feature_map"].metrics["sqnr_db"] == math.inf
    changed = {c.layer: c for c in compare_items(pair.datapoint(a, 1), pair.datapoint(b, 1))}  # both img1
    jsd = changed["attn/attention"].metrics["jsd"]
    assert jsd[0] == pytest.approx(0, abs=1e-6) and jsd[1] > 0.01  # only head 1 was perturbed
    wa = attention_weights(pair.datapoint(a, 1).debug_item("attn", "attention").value)
    wb = attention_weights(pair.datapoint(b, 1).debug_item("attn", "attention").value)
    assert wa is not None and wb is not None and wa.shape == (2, 9, 9)
    expected = (jensenshannon(wa[1].astype(np.float64), wb[1].astype(np.float64), base=2, axis=-1) ** 2).mean()
    assert jsd[1] == pytest.approx(expected, rel=1e-6)
    assert 0 < changed["features/feature_map"].metrics["rel_error"] < 1


def test_deltas_on_a_crafted_log_aligned_by_image_id(pair: Any) -> None:
    a, b = PassKey("fp", "test"), PassKey("q8", "test")
    al = align(5, 4, "image_id", pair.meta_table(a), pair.meta_table(b))
    assert list(zip(al.a.tolist(), al.b.tolist())) == [(0, 2), (1, 1), (3, 0)]
    assert al.unmatched_a.tolist() == [2, 4] and al.unmatched_b.tolist() == [3]
    d = deltas(pair.scores(a).per_datapoint["miou"], pair.scores(b).per_datapoint["miou"], "miou", True, al,
               Thresholds(change=0.1, good=0.75, bad=0.6))
    np.testing.assert_allclose(d.delta, [0.5 - 0.9, 0.65 - 0.8, 0.2 - 0.6])
    assert d.idx_a[d.order()].tolist() == [0, 3, 1]
    assert d.forgotten.tolist() == [True, False, False]  # img0: 0.9 -> 0.5; img1 0.8 -> 0.65 is not bad


def test_pass_summary_finds_the_perturbed_head_and_its_worst_datapoints(pair: Any, tmp_path: Path) -> None:
    a, b = PassKey("fp", "test"), PassKey("q8", "test")
    seen: list[tuple[int, int]] = []
    summary = compute_summary(pair, a, b, "image_id", progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (3, 3)
    rows = summary.table()
    assert (rows[0].layer, rows[0].head) == ("attn/attention", 1)
    assert rows[1].head == 0 and rows[1].values["jsd"] == pytest.approx(0, abs=1e-6)
    assert rows[-1].layer == "features/feature_map" and rows[-1].head is None
    worst = summary.worst("attn/attention", 1)
    column = summary.arrays["attn/attention"]["jsd"][:, 1]
    assert [w[2] for w in worst] == sorted(column.tolist(), reverse=True)
    assert {(w[0], w[1]) for w in worst} == {(0, 2), (1, 1), (3, 0)}
    again = LayerSummary.from_bytes(summary.to_bytes())
    assert again.table() == rows and again.pass_b == b


def test_summary_jobs_run_in_background_and_reuse_the_disk_cache(pair: Any, tmp_path: Path) -> None:
    a, b = PassKey("fp", "test"), PassKey("q8", "test")
    jobs = SummaryJobs(pair)
    try:
        key = jobs.start(a, b)
        status = jobs.wait(key, 30)
        assert status is not None and status.finished and not status.error and not status.cached
        assert status.done == status.total == 4
        files = list((pair.cache_dir / "compare").glob("*.npz"))
        assert [f.stem for f in files] == [key]
        assert not any(p.suffix == ".npz" for p in (tmp_path / "logs").rglob("*"))
    finally:
        jobs.close()
    fresh = SummaryJobs(pair)  # as after a restart
    try:
        status = fresh.wait(fresh.start(a, b), 5)
        assert status is not None and status.cached and status.summary is not None
        assert status.summary.table() == compute_summary(pair, a, b).table()
    finally:
        fresh.close()


def _paged_pair(tmp_path: Path, by: str | None) -> Path:
    """Runs "fp" and "q8" of 11 datapoints, paged by 3 and by 4; aligned by ``image_id`` (``by``), pass b holds them
    shuffled, so its pages are revisited."""
    logs = tmp_path / "logs"
    ids = [f"img{i}" for i in range(11)]
    shuffled = [ids[i] for i in (7, 2, 9, 0, 4, 10, 1, 8, 3, 6, 5)]
    write_run(logs, "fp", list(np.linspace(0.1, 0.9, 11)), ids, 0.0, per_page=3)
    write_run(logs, "q8", list(np.linspace(0.9, 0.1, 11)), shuffled if by else ids, 0.2, seed=2, per_page=4)
    return logs


@pytest.mark.parametrize("by", [None, "image_id"])
def test_summary_split_into_parts_on_workers_equals_the_whole_pages(tmp_path: Path, make_store: Any,
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  by: str | None) -> None:
    """With pages cached as columns, a task per part of a page (here every datapoint its own part), each reading
    only its datapoints' bytes of both passes, gives the table of whole pages read in-process."""
    from eval_viewer.backend import summary as summary_module
    from eval_viewer.backend import workers

    store = make_store(_paged_pair(tmp_path, by))
    a, b = PassKey("fp", "test"), PassKey("q8", "test")
    whole = compute_summary(store, a, b, by, workers=0)  # (reading every page once writes their columns)
    monkeypatch.setattr(workers, "TASK_BYTES", 1)
    pages_a, pages_b = store.pass_pages(a), store.pass_pages(b)
    split = summary_module._split(summary_module._schedule(pages_a, pages_b, alignment_for(store, a, b, by)),
                                  pages_a, pages_b, 2)
    assert len(split) == 11 and all(len(pairs) == 1 for _, _, pairs in split)
    warmed = [call.args for call in summary_module._warm_calls(split, pages_a, pages_b) if call is not None]
    listed_a = [rel for args in warmed for rel in args[1]]
    listed_b = [rel for args in warmed for rel in args[3]]  # each page read ahead once, however often it is needed
    assert sorted(listed_a) == sorted({rel for rel, _, _ in split})
    assert sorted(listed_b) == sorted({rel for _, rels, _ in split for rel in rels})
    parts = compute_summary(store, a, b, by, workers=2)
    assert parts.table() == whole.table()
    for layer, metrics in whole.arrays.items():
        for metric, values in metrics.items():
            np.testing.assert_array_equal(parts.arrays[layer][metric], values, err_msg=f"{layer} {metric}")


def _per_datapoint(store: Any, a: PassKey, b: PassKey, i: int, j: int) -> dict[str, Any]:
    return {c.layer: c.metrics for c in compare_items(store.datapoint(a, i), store.datapoint(b, j)) if c.metrics}


@pytest.mark.parametrize(("by", "workers"), [(None, 0), ("image_id", 0), (None, 2), ("image_id", 2)])
def test_summary_read_page_by_page_equals_the_paired_view_figures(tmp_path: Path, make_store: Any,
                                                                   by: str | None, workers: int) -> None:
    """In-process and in worker processes (a task per page of a, reading the pages of b it needs)."""
    store = make_store(_paged_pair(tmp_path, by))
    a, b = PassKey("fp", "test"), PassKey("q8", "test")
    seen: list[tuple[int, int]] = []
    summary = compute_summary(store, a, b, by, progress=lambda d, t: seen.append((d, t)), workers=workers)
    assert seen[-1] == (11, 11) and [d for d, _ in seen] == sorted(d for d, _ in seen)
    for row, (i, j) in enumerate(zip(summary.idx_a.tolist(), summary.idx_b.tolist())):
        expected = _per_datapoint(store, a, b, i, j)
        assert set(expected) == set(summary.arrays)
        for layer, metrics in expected.items():
            for metric, value in metrics.items():
                got = summary.arrays[layer][metric][row]
                np.testing.assert_allclose(got, np.atleast_1d(value), rtol=1e-9, atol=1e-12, err_msg=metric)


@pytest.mark.parametrize("workers", [0, 2])
def test_summary_with_a_corrupt_page_in_the_middle_names_it(tmp_path: Path, make_store: Any, workers: int) -> None:
    logs = tmp_path / "logs"
    ids = [f"img{i}" for i in range(9)]
    write_run(logs, "fp", [0.5] * 9, ids, 0.0, per_page=3)
    write_run(logs, "q8", [0.5] * 9, ids, 0.2, seed=2, per_page=3)
    broken = logs / "q8" / DEBUGGER_DIR / page_name(1)
    broken.write_bytes(broken.read_bytes()[:200])
    summary = compute_summary(make_store(logs), PassKey("fp", "test"), PassKey("q8", "test"), workers=workers)
    jsd = summary.arrays["attn/attention"]["jsd"]
    assert np.isnan(jsd[3:6]).all() and np.isfinite(jsd[[0, 1, 2, 6, 7, 8]]).all()
    assert any(str(broken) in note for note in summary.notes)
    assert summary.table()[0].count == 6


def test_summary_with_nothing_readable_says_why(tmp_path: Path, make_store: Any) -> None:
    logs = tmp_path / "logs"
    ids = [f"img{i}" for i in range(4)]
    write_run(logs, "fp", [0.5] * 4, ids, 0.0)
    write_run(logs, "q8", [0.5] * 4, ids, 0.2, seed=2)
    broken = logs / "q8" / DEBUGGER_DIR / page_name(0)
    broken.write_bytes(broken.read_bytes()[:300])
    summary = compute_summary(make_store(logs), PassKey("fp", "test"), PassKey("q8", "test"))
    assert summary.arrays == {} and summary.table() == []
    assert summary.notes[0].startswith("Nothing to compare") and any(str(broken) in n for n in summary.notes)


@pytest.mark.parametrize("wide", [np.float32, np.float64])
def test_half_to_float_by_bits_equals_numpys_cast_for_every_half(wide: type) -> None:
    """All 65,536 float16 bit patterns (subnormals, both zeros, infinities, NaNs), in batches with and without
    special values and signs, as numpy casts them."""
    every = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    finite_positive = every[: 0x7C00]
    for raw in (every, every[::-1].copy(), finite_positive, -finite_positive, every.reshape(256, 256)[:, ::3]):
        got = half_to_float(raw, np.empty(raw.shape, dtype=wide))
        np.testing.assert_array_equal(got, raw.astype(wide))
        assert np.array_equal(np.signbit(got), np.signbit(raw.astype(wide)))
