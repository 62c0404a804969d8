"""The comparison's compiled loop (:mod:`eval_viewer.backend.attention_kernel`): its hand-written pieces against
numpy's float64, and its figures against scipy where the loop's two JSD forms and its input types meet."""

from __future__ import annotations

import os
from pathlib import Path

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
            out[i] = kernel._from_half(x[i])


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


def test_one_compiled_version_serves_every_pair_of_types() -> None:
    """Weights reach the loop as read-only bytes: writable or read-only (the paired view's arrays come straight from
    a page), float16 or float32, alone or mixed, all run the version that :func:`warm` loads."""
    kernel.warm()
    loaded = list(kernel.attention_rows.signatures)
    rng = np.random.default_rng(2)
    half = rng.random((2, 3, 8)).astype(np.float16)
    single = np.frombuffer(rng.random((2, 3, 8)).astype(np.float32).tobytes(), dtype=np.float32).reshape(2, 3, 8)
    for p, q in ((half, half), (single, single), (half, single), (single, half)):
        attention_divergence(p, q)
    assert list(kernel.attention_rows.signatures) == loaded and len(loaded) == 1


def test_the_same_numbers_as_float16_and_as_float32_do_not_differ() -> None:
    rng = np.random.default_rng(6)
    half = (rng.random((20, 4, 30, 300)) ** 3).astype(np.float16)
    got = attention_divergence(half, half.astype(np.float32))
    assert np.all(got["jsd"] == 0.0)
    assert np.array_equal(got["entropy_a"], got["entropy_b"]) and np.array_equal(got["topk_a"], got["topk_b"])


def test_a_broken_query_beside_a_row_does_not_change_its_top_k() -> None:
    """The paired view compares a datapoint alone, the summary beside others: a NaN, or a -0.0, in another row
    must not change how a row's top-k mass is summed."""
    rng = np.random.default_rng(9)
    p = (rng.random((2, 1, 3, 64)) ** 4).astype(np.float16)
    alone = attention_divergence(p[:1], p[:1])["topk_a"]
    exact = np.mean([np.sort(row.astype(np.float64))[-5:].sum() / row.astype(np.float64).sum() for row in p[0, 0]])
    for broken in (np.nan, -0.0):
        q = p.copy()
        q[1, 0, 1, 7] = broken
        together = attention_divergence(q, q)["topk_a"]
        assert together[0] == alone[0]
        np.testing.assert_allclose(together[0, 0], exact, rtol=1e-6)


def test_long_rows_keep_their_digits() -> None:
    """2^18 keys: a float32 running sum over the row lost the fourth digit; the loop sums blocks in float64."""
    p = np.full((1, 1, 1, 1 << 18), 0.7, dtype=np.float32)
    q = p.copy()
    q[..., ::2] = 0.1
    got = attention_divergence(p, q)
    for name, expected in _scipy_rows(p[0], q[0]).items():
        np.testing.assert_allclose(got[name][0, 0], expected[0], rtol=1e-5, err_msg=name)  # (was 2e-4 off)


def test_byte_order_other_than_the_machines() -> None:
    rng = np.random.default_rng(1)
    p = rng.random((3, 2, 4, 16)).astype(np.float32)
    q = (p * rng.random(p.shape)).astype(np.float32)
    native = attention_divergence(p, q)
    for kind in (">f4", ">f2"):
        swapped = attention_divergence(p.astype(kind), q.astype(kind))
        tolerance = 0 if kind == ">f4" else 1e-2
        for name, values in native.items():
            np.testing.assert_allclose(swapped[name], values, rtol=tolerance, atol=tolerance * 1e-2, err_msg=name)


def test_without_the_compiled_loop_float32_is_compared_in_float64(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where numba cannot load, the comparison still answers, by the float64 path."""
    from eval_viewer.backend import divergence

    rng = np.random.default_rng(4)
    p = rng.random((3, 2, 5, 12)).astype(np.float32)
    q = rng.random((3, 2, 5, 12)).astype(np.float32)
    monkeypatch.setattr(divergence, "_KERNEL_OK", [False])
    fallback = attention_divergence(p, q)
    wide = attention_divergence(p.astype(np.float64), q.astype(np.float64))
    assert all(np.array_equal(fallback[name], wide[name]) for name in wide)


def test_a_read_only_install_without_a_cache_dir_still_compares(tmp_path: Path) -> None:
    """numba's disk cache needs a writable place: beside the package or under the user's cache dir. Where there is
    neither, the loop is compiled in each process instead of failing."""
    import shutil
    import subprocess
    import sys

    import eval_viewer

    package = tmp_path / "site" / "eval_viewer"
    shutil.copytree(Path(eval_viewer.__file__).parent, package, ignore=shutil.ignore_patterns("__pycache__"))
    (package / "backend" / "__pycache__").write_text("not a directory: no cache can be written here")
    env = {key: value for key, value in os.environ.items() if key != "NUMBA_CACHE_DIR"}
    env.update(PYTHONPATH=str(tmp_path / "site"), XDG_CACHE_HOME="/dev/null/cache", HOME="/dev/null",
               PYTHONDONTWRITEBYTECODE="1")
    code = ("import numpy as np, eval_viewer; from eval_viewer.backend.divergence import attention_divergence;"
            "p = np.full((1, 1, 2, 4), 0.25, np.float16); print(eval_viewer.__file__);"
            "print(attention_divergence(p, p)['jsd'][0, 0])")
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)  # (cwd: not the checkout, whose package python -c would import first)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == [str(package / "__init__.py"), "0.0"]


@pytest.mark.parametrize("keys", [5, 64, 1000])
def test_a_float16_copy_against_its_float32_original_keeps_its_digits(keys: int) -> None:
    """The two passes differ only by float16's rounding (a JSD near 1e-9 bits): normalising each weight in float32
    first rounded away most of their difference (3e-3 off); ``d`` from float64 products keeps 1e-4."""
    rng = np.random.default_rng(keys)
    x = rng.standard_normal((400, keys)) * 2
    p = np.exp(x)
    p = (p / p.sum(1, keepdims=True)).astype(np.float32)
    q = p.astype(np.float16).astype(np.float32)
    got = attention_divergence(p.reshape(-1, 1, 1, keys), q.reshape(-1, 1, 1, keys))["jsd"].ravel()
    expected = jensenshannon(p.astype(np.float64), q.astype(np.float64), axis=1, base=2) ** 2
    assert np.median(expected) < 2e-8
    np.testing.assert_allclose(got, expected, rtol=1e-4)


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
@pytest.mark.parametrize(("delta", "keys"), [(1e-4, 1000), (1e-5, 2), (1e-5, 1000), (1e-6, 2), (1e-7, 64)])
def test_a_nearly_one_hot_row_keeps_the_digits_of_its_small_entropy(dtype: type, delta: float, keys: int) -> None:
    """An attention sink: one weight 1 - delta. Normalising in float32 shifted ``sum p ln p`` by about 6e-8 nats,
    most of such a row's entropy (2e-5 bits was 4e-3 off); it is renormalised by the weights' exact sum."""
    row = np.full(keys, delta / (keys - 1))
    row[0] = 1 - delta
    p = row.astype(dtype).reshape(1, 1, 1, keys)
    got = attention_divergence(p, p)["entropy_a"][0, 0]
    expected = scipy_entropy(p.ravel().astype(np.float64), base=2)
    assert expected < 3e-3
    assert got == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("shape", [(3, 2, 0, 8), (3, 2, 4, 0), (0, 2, 4, 8)])
def test_attention_with_no_query_or_no_key_is_nan_not_an_error(shape: tuple[int, ...]) -> None:
    for dtype in (np.float16, np.float32, np.float64):
        got = attention_divergence(np.zeros(shape, dtype), np.zeros(shape, dtype))
        for values in got.values():
            assert values.shape == shape[:-2] and np.isnan(values).all()
