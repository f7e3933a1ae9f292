"""Standardize → PCA → FastICA → per-component neuron sets, in bounded memory.

Memory design (what we chose and why). The design matrix X is tokens × features, features = layers · width
(a 7B model: 32 × 4096 = 131 072). Neither a dense float32 X in RAM (15.7 GB for 30k tokens) nor a float64
feature covariance (131 072² · 8 B = 137 GB) fits, and sklearn's IncrementalPCA would run an SVD of a
(k + batch) × features matrix per batch (slow at this width). Instead:

1. :class:`ActivationStore` keeps the captured rows in RAM up to a byte budget and spills the rest to a
   temporary file that is read back in chunks with plain reads (no mmap, so resident memory stays flat).
   The model therefore runs only once.
2. :func:`streaming_pca` is a randomized range finder with power iterations (Halko, Martinsson & Tropp 2011,
   Alg. 4.4 + 5.1) that only ever touches X through chunk products, accumulated in float64:
   per-feature mean/std (Chan's merge), Y = Xs Ω, Z = Xsᵀ Q, B = Qᵀ Xs. Peak extra memory is one float64 chunk (64 MiB) plus
   O((tokens + features) · l) for l = k + oversampling — linear, never quadratic, in the feature count.
   No library streams a randomized SVD over chunked out-of-core data, hence the ~30 lines here; the pieces
   (QR, SVD, svd_flip, FastICA) are numpy/scikit-learn.
3. FastICA (scikit-learn, seeded) runs on the tokens × k PCA scores. FastICA whitens by projecting onto its
   top-k principal components, so reducing to more than k PCA dims first (the predecessor used 1000) would
   change nothing but the cost: we reduce to exactly k. The spatial maps are ``components_ᵀ · mixing_``.

The ICA's own non-convergence (sklearn's ConvergenceWarning) is recorded, never hidden.
"""

from __future__ import annotations

import os
import re
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fnsft.errors import MaskError

#: Std floor for standardization: a dead channel (constant over tokens) becomes all zeros, not NaN.
STD_FLOOR = 1e-8
#: ICA needs enough tokens per component to estimate higher-order statistics at all.
MIN_TOKENS_PER_COMPONENT = 10


class ActivationStore:
    """Float32 design-matrix rows, in RAM up to ``budget_bytes`` and in a temporary file beyond it."""

    def __init__(self, width: int, budget_bytes: int, spill_dir: str | Path | None = None):
        self.width = width
        self.budget_bytes = budget_bytes
        self.spill_dir = spill_dir
        self.n_rows = 0
        self._blocks: list[np.ndarray] = []
        self._ram_bytes = 0
        self._spill_path: Path | None = None
        self._spill_rows: list[int] = []

    @property
    def spilled(self) -> bool:
        return self._spill_path is not None

    def append(self, rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows, dtype=np.float32)
        if rows.ndim != 2 or rows.shape[1] != self.width:
            raise ValueError(f"expected rows of width {self.width}, got shape {rows.shape}")
        if not len(rows):
            return
        self.n_rows += len(rows)
        if self._spill_path is None and self._ram_bytes + rows.nbytes <= self.budget_bytes:
            self._blocks.append(rows)
            self._ram_bytes += rows.nbytes
            return
        if self._spill_path is None:
            fd, name = tempfile.mkstemp(prefix="fnsft-activations-", suffix=".f32", dir=self.spill_dir)
            os.close(fd)
            self._spill_path = Path(name)
        with self._spill_path.open("ab") as handle:
            rows.tofile(handle)
        self._spill_rows.append(len(rows))

    def chunks(self, max_rows: int) -> Iterator[np.ndarray]:
        """All rows in insertion order, at most ``max_rows`` at a time (the same split on every pass)."""
        for block in self._blocks:
            for start in range(0, len(block), max_rows):
                yield block[start : start + max_rows]
        if self._spill_path is not None:
            with self._spill_path.open("rb") as handle:
                for count in self._spill_rows:
                    for start in range(0, count, max_rows):
                        take = min(max_rows, count - start)
                        yield np.fromfile(handle, dtype=np.float32, count=take * self.width).reshape(take, self.width)

    def close(self) -> None:
        if self._spill_path is not None:
            self._spill_path.unlink(missing_ok=True)
            self._spill_path = None
        self._blocks.clear()

    def __enter__(self) -> ActivationStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def chunk_rows_for(width: int, chunk_bytes: int = 64 << 20) -> int:
    """Rows per float64 working chunk so that one chunk stays near ``chunk_bytes``."""
    return max(1, min(8192, chunk_bytes // (8 * width)))


@dataclass
class PCAResult:
    mean: np.ndarray  # (features,)
    std: np.ndarray  # (features,)
    components: np.ndarray  # (dims, features), rows orthonormal
    scores: np.ndarray  # (tokens, dims) = standardized X · componentsᵀ
    explained_variance: np.ndarray  # (dims,)


def feature_moments(store: ActivationStore, chunk_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and population std in float64, merged chunk by chunk (Chan et al.)."""
    count = 0
    mean = np.zeros(store.width)
    m2 = np.zeros(store.width)
    for chunk in store.chunks(chunk_rows):
        block = chunk.astype(np.float64)
        n = len(block)
        block_mean = block.mean(axis=0)
        block_m2 = ((block - block_mean) ** 2).sum(axis=0)
        delta = block_mean - mean
        total = count + n
        mean = mean + delta * (n / total)
        m2 = m2 + block_m2 + delta**2 * (count * n / total)
        count = total
    std = np.sqrt(m2 / max(count, 1))
    return mean, np.maximum(std, STD_FLOOR)


def streaming_pca(store: ActivationStore, dims: int, seed: int, *, power_iters: int = 4, oversample: int = 10) -> PCAResult:
    """Top-``dims`` principal components of the standardized rows, touching them only chunk by chunk."""
    from scipy.linalg import qr, svd
    from sklearn.utils.extmath import svd_flip

    chunk_rows = chunk_rows_for(store.width)
    mean, std = feature_moments(store, chunk_rows)
    n, width = store.n_rows, store.width
    rank = min(width, n - 1)
    sketch = min(dims + max(oversample, dims), rank)

    def standardized() -> Iterator[np.ndarray]:
        for chunk in store.chunks(chunk_rows):
            block = chunk.astype(np.float64)
            block -= mean
            block /= std
            yield block

    def times(right: np.ndarray) -> np.ndarray:  # Xs @ right, (n × l)
        return np.concatenate([block @ right for block in standardized()])

    def transposed_times(left: np.ndarray) -> np.ndarray:  # Xsᵀ @ left, (features × l)
        total = np.zeros((width, left.shape[1]))
        start = 0
        for block in standardized():
            total += block.T @ left[start : start + len(block)]
            start += len(block)
        return total

    rng = np.random.default_rng(seed)
    q = qr(times(rng.standard_normal((width, sketch))), mode="economic")[0]
    for _ in range(power_iters):
        q = qr(times(qr(transposed_times(q), mode="economic")[0]), mode="economic")[0]
    small = transposed_times(q).T  # B = Qᵀ Xs, (l × features)
    u_small, singular, vt = svd(small, full_matrices=False)
    u = q @ u_small
    u, vt = svd_flip(u, vt)  # deterministic signs
    return PCAResult(
        mean=mean,
        std=std,
        components=vt[:dims],
        scores=u[:, :dims] * singular[:dims],
        explained_variance=singular[:dims] ** 2 / max(n - 1, 1),
    )


@dataclass
class ICAResult:
    """Spatial maps (features × k, sorted by the variance each component carries) and how the fit went."""

    maps: np.ndarray
    source_kurtosis: np.ndarray
    variance_share: np.ndarray
    converged: bool
    n_iter: int
    max_iter: int
    tol: float
    warnings: list[str] = field(default_factory=list)


def run_ica(
    store: ActivationStore, components: int, seed: int, *, max_iter: int = 1000, tol: float = 1e-4
) -> ICAResult:
    """Standardize, reduce to ``components`` PCA dims, FastICA; maps back in feature space."""
    from scipy.stats import kurtosis
    from sklearn.decomposition import FastICA
    from sklearn.exceptions import ConvergenceWarning

    if components < 2:
        raise MaskError(f"--components {components}: ICA needs at least 2 components")
    if components > store.width:
        raise MaskError(f"--components {components}: more components than captured neurons ({store.width})")
    needed = MIN_TOKENS_PER_COMPONENT * components
    if store.n_rows < needed:
        raise MaskError(
            f"only {store.n_rows} tokens captured for {components} components; need at least {needed} "
            f"({MIN_TOKENS_PER_COMPONENT} per component): use more --samples or --max-tokens, or fewer --components"
        )
    pca = streaming_pca(store, components, seed)
    ica = FastICA(n_components=components, whiten="unit-variance", random_state=seed, max_iter=max_iter, tol=tol)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        sources = ica.fit_transform(pca.scores)
    messages = [str(w.message) for w in caught if issubclass(w.category, ConvergenceWarning)]
    maps = pca.components.T @ ica.mixing_  # (features × k): each column is one component's spatial map
    if not np.isfinite(maps).all():
        raise MaskError("ICA produced non-finite maps (degenerate activations: too few distinct tokens?)")
    energy = (maps**2).sum(axis=0)
    order = np.argsort(-energy, kind="stable")
    maps = maps[:, order]
    # Sign is arbitrary in ICA: make each map's largest-magnitude entry positive, so files are comparable.
    peaks = maps[np.abs(maps).argmax(axis=0), np.arange(maps.shape[1])]
    maps = maps * np.where(peaks < 0, -1.0, 1.0)
    return ICAResult(
        maps=maps,
        source_kurtosis=kurtosis(sources[:, order], axis=0),
        # Standardized features each carry unit variance, so the total is the feature count.
        variance_share=energy[order] / store.width,
        converged=not messages,
        n_iter=int(ica.n_iter_),
        max_iter=max_iter,
        tol=tol,
        warnings=messages,
    )


@dataclass(frozen=True)
class ThresholdRule:
    """How a spatial map becomes a neuron set.

    - ``z=3``: z-score each map over all neurons; keep |z| ≥ 3.
    - ``percentile=98``: keep |map| ≥ its 98th percentile (the predecessor's rule, ~2 % per component).
    - ``union=2``: one |z| cut shared by all components, chosen so the union of all networks is 2 % of neurons.
    """

    kind: str
    value: float

    @classmethod
    def parse(cls, text: str) -> ThresholdRule:
        match = re.fullmatch(r"\s*(z|percentile|union)\s*=\s*([0-9]*\.?[0-9]+)\s*%?\s*", text or "")
        if not match:
            raise MaskError(f"threshold {text!r}: use z=3, percentile=98 or union=2 (percent of neurons)")
        kind, value = match.group(1), float(match.group(2))
        if kind in ("percentile", "union") and not 0 < value < 100:
            raise MaskError(f"threshold {text!r}: {kind} must be between 0 and 100 (exclusive)")
        if kind == "z" and value <= 0:
            raise MaskError(f"threshold {text!r}: z must be positive")
        return cls(kind, value)

    def __str__(self) -> str:
        return f"{self.kind}={self.value:g}"

    def select(self, maps: np.ndarray) -> list[np.ndarray]:
        """Selected flat feature indices (sorted) for each column of ``maps``."""
        magnitude = np.abs(maps)
        if self.kind == "percentile":
            cuts = np.percentile(magnitude, self.value, axis=0)
            return [np.flatnonzero(magnitude[:, c] >= cuts[c]) for c in range(maps.shape[1])]
        z = np.abs((maps - maps.mean(axis=0)) / np.maximum(maps.std(axis=0), STD_FLOOR))
        # union: the union is the set of neurons whose strongest |z| over components passes the shared cut.
        cut = self.value if self.kind == "z" else np.quantile(z.max(axis=1), 1 - self.value / 100)
        return [np.flatnonzero(z[:, c] >= cut) for c in range(maps.shape[1])]
