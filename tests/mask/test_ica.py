import numpy as np
import pytest

from fnsft.errors import MaskError
from fnsft.mask.ica import ActivationStore, ThresholdRule, run_ica, streaming_pca


def planted(tokens=3000, features=200, seed=0):
    """Three sparse Laplace sources, each driving its own block of 10 features, plus Gaussian noise."""
    rng = np.random.default_rng(seed)
    sources = rng.laplace(size=(tokens, 3))
    mixing = np.zeros((3, features))
    blocks = [range(10, 20), range(50, 60), range(150, 160)]
    for i, block in enumerate(blocks):
        mixing[i, list(block)] = rng.uniform(2.0, 3.0, size=10)
    data = sources @ mixing + rng.normal(scale=1.0, size=(tokens, features)) + rng.normal(size=features) * 5
    return data.astype(np.float32), [set(b) for b in blocks]


def store_of(data, budget, chunk=500, tmp=None):
    store = ActivationStore(data.shape[1], budget, spill_dir=tmp)
    for start in range(0, len(data), chunk):
        store.append(data[start : start + chunk])
    return store


def test_spilled_store_reads_back_the_same_rows_and_pca(tmp_path):
    data, _ = planted()
    in_ram = store_of(data, budget=1 << 30)
    spilled = store_of(data, budget=data[:700].nbytes, tmp=tmp_path)  # first block in RAM, the rest on disk
    assert spilled.spilled and not in_ram.spilled and spilled.n_rows == len(data)
    np.testing.assert_array_equal(np.concatenate(list(spilled.chunks(333))), data)
    a, b = streaming_pca(in_ram, 3, seed=1), streaming_pca(spilled, 3, seed=1)
    np.testing.assert_array_equal(a.components, b.components)
    spilled.close()
    assert not list(tmp_path.iterdir())  # temp file removed


def test_streaming_pca_matches_exact_pca_of_standardized_data():
    from sklearn.decomposition import PCA

    data, _ = planted()
    result = streaming_pca(store_of(data, 1 << 30), 3, seed=0)
    standardized = (data - data.mean(0)) / data.std(0)
    exact = PCA(n_components=3, svd_solver="full").fit(standardized.astype(np.float64))
    np.testing.assert_allclose(result.explained_variance, exact.explained_variance_, rtol=1e-6)
    np.testing.assert_allclose(np.abs(result.components @ exact.components_.T), np.eye(3), atol=1e-6)


def test_ica_recovers_planted_networks():
    data, blocks = planted()
    result = run_ica(store_of(data, 1 << 30), 3, seed=0)
    assert result.converged and not result.warnings
    found = [set(s.tolist()) for s in ThresholdRule.parse("z=3").select(result.maps)]
    assert sorted(map(sorted, found)) == sorted(map(sorted, blocks))
    assert (result.source_kurtosis > 1).all()  # Laplace sources are super-Gaussian


def test_non_convergence_is_recorded_not_hidden():
    data, _ = planted()
    from fnsft.mask import ica as ica_module

    result = ica_module.run_ica(store_of(data, 1 << 30), 3, seed=0, max_iter=1, tol=1e-12)
    assert not result.converged and "did not converge" in result.warnings[0].lower()


def test_too_few_tokens_for_components():
    data, _ = planted(tokens=25)
    with pytest.raises(MaskError, match="only 25 tokens"):
        run_ica(store_of(data, 1 << 30), 3, seed=0)


def test_threshold_rules():
    rng = np.random.default_rng(0)
    maps = rng.normal(size=(5000, 4))
    pct = ThresholdRule.parse("percentile=98").select(maps)
    assert all(abs(len(s) - 100) <= 1 for s in pct)
    union = ThresholdRule.parse("union=5%").select(maps)
    assert abs(len(set().union(*map(set, union))) - 250) <= 1
    assert str(ThresholdRule.parse(" z = 2.5 ")) == "z=2.5"


@pytest.mark.parametrize("text", ["", "z", "z=-1", "percentile=100", "union=0", "top=5", "percentile=abc"])
def test_bad_threshold_rules(text):
    with pytest.raises(MaskError, match="threshold"):
        ThresholdRule.parse(text)
