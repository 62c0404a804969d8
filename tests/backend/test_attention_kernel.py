"""The comparison's compiled loop (:mod:`eval_viewer.backend.attention_kernel`): its hand-written pieces against
numpy's float64, and its figures against scipy where the loop's two JSD forms and its input types meet."""

from __future__ import annotations

import numba
import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.stats import entropy as scipy_entropy

from eval_viewer.backend import attention_kernel as kernel
from eval_viewer.backend.divergence import attention_divergence


@numba.njit
def _each(fn_id: int, x: np.ndarray, out: np.ndarray) -> None:
    for i in range(x.size):
        if fn_id == 0:
            out[i] = kernel._ln(x[i])
        elif fn_id == 1:
            out[i] = kernel._series(x[i])
        else:
            out[i] = kernel._widen(x[i])


def test_ln_is_within_float32_rounding_of_the_float64_logarithm() -> None:
    x = np.concatenate([np.logspace(-30, 30, 200_001), 1 + np.linspace(-0.3, 0.4, 70_001),
                        [np.finfo(np.float32).tiny, 1.0, 2.0, np.sqrt(2.0)]]).astype(np.float32)
    got = np.empty_like(x)
    _each(0, x, got)
    exact = np.log(x.astype(np.float64))
    assert got[-3] == 0.0  # ln 1, exactly
    nonzero = exact != 0
    assert np.max(np.abs(got - exact)[nonzero] / np.abs(exact[nonzero])) < 3e-7


def test_series_is_g_of_d_to_float32_precision_inside_its_range() -> None:
    d = np.linspace(0, 0.5, 100_001)
    t = (d * d).astype(np.float32)
    got = np.empty_like(t)
    _each(1, t, got)
    d64 = np.sqrt(t.astype(np.float64))
    exact = (1 + d64) * np.log1p(d64) + (1 - d64) * np.log1p(-d64)
    inside = exact > 0
    assert np.max(np.abs(got[inside] - exact[inside]) / exact[inside]) < 3e-7


def test_widen_gives_numpys_float32_for_every_half() -> None:
    halves = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    got = np.empty(halves.size, dtype=np.float32)
    _each(2, halves, got)
    assert np.array_equal(got.view(np.uint32), halves.view(np.float16).astype(np.float32).view(np.uint32))


def _scipy_rows(p: np.ndarray, q: np.ndarray) -> dict[str, np.ndarray]:
    p64, q64 = p.astype(np.float64).reshape(-1, p.shape[-1]), q.astype(np.float64).reshape(-1, q.shape[-1])
    lead = p.shape[:-1]
    return {"jsd": (jensenshannon(p64, q64, base=2, axis=1) ** 2).reshape(lead).mean(-1),
            "entropy_a": scipy_entropy(p64, base=2, axis=1).reshape(lead).mean(-1),
            "entropy_b": scipy_entropy(q64, base=2, axis=1).reshape(lead).mean(-1)}


@pytest.mark.parametrize("types", [(np.float16, np.float32), (np.float32, np.float16)])
def test_a_float16_pass_against_a_float32_pass_equals_scipy(types: tuple[type, type]) -> None:
    """A quantized model's float16 capture against a float32 one: the loop compiled for mixed inputs."""
    rng = np.random.default_rng(3)
    p = rng.random((6, 2, 5, 40)) ** 4
    q = p * np.exp(rng.standard_normal(p.shape))  # weights near and far apart, both JSD forms in every row
    p, q = p.astype(types[0]), q.astype(types[1])
    got = attention_divergence(p, q)
    for name, expected in _scipy_rows(p, q).items():
        np.testing.assert_allclose(got[name], expected, rtol=1e-4, err_msg=name)


def test_figures_do_not_depend_on_the_batch_or_the_threads() -> None:
    """The paired view compares one datapoint, the summary a page of them over several threads: the same bits."""
    rng = np.random.default_rng(5)
    p = (rng.random((64, 4, 16, 16)) ** 3).astype(np.float16)
    q = (p.astype(np.float32) * np.exp(0.5 * rng.standard_normal(p.shape))).astype(np.float16)
    together = attention_divergence(p, q, threads=2)
    single = attention_divergence(p, q, threads=1)
    alone = attention_divergence(p[17:18], q[17:18])
    for name, values in together.items():
        assert np.array_equal(values, single[name]), name
        assert np.array_equal(values[17:18], alone[name]), name


def test_warm_loads_the_loop_for_both_input_types() -> None:
    kernel.warm()
    loaded = {tuple(str(t.dtype) for t in signature[:2]) for signature in kernel.attention_rows.signatures}
    assert {("uint16", "uint16"), ("float32", "float32")} <= loaded
