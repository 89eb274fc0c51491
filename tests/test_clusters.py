import warnings

import numpy as np
import pytest

from mlx_pn.clustering.kmeans import (assign, cluster_report, histogram, kmeans, nmi, warn_if_k_too_large)
from mlx_pn.clustering.sampling import importance_weights, lost_mass, resample, resample_stats


def blobs(n=1200, k=6, d=16, spread=8.0, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((k, d)) * spread
    y = rng.integers(0, k, n)
    return (centres[y] + rng.standard_normal((n, d))).astype(np.float32), y


# --------------------------------------------------------------------------------------------- k-means

def test_kmeans_recovers_separated_blobs():
    x, y = blobs()
    r = kmeans(x, 6, seed=0)
    assert nmi(r.labels, y) > 0.99
    assert r.centroids.shape == (6, 16) and r.centroids.dtype == np.float32
    assert r.labels.shape == (1200,) and r.labels.dtype == np.int32
    # The reported inertia is the inertia of the returned centroids and labels.
    ref = ((x.astype(np.float64) - r.centroids[r.labels]) ** 2).sum()
    assert r.inertia == pytest.approx(ref, rel=1e-4)


def test_kmeans_spherical_unit_centroids():
    x, y = blobs(n=900, k=4, d=32, seed=3)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    r = kmeans(x, 4, spherical=True, seed=1)
    assert np.allclose(np.linalg.norm(r.centroids, axis=1), 1.0, atol=1e-5)
    assert nmi(r.labels, y) > 0.99
    assert np.array_equal(r.labels, np.argmax(x @ r.centroids.T, axis=1))  # nearest = highest cosine


def test_kmeans_deterministic_for_seed():
    x, _ = blobs(n=1500, k=10, spread=1.5, seed=1)  # overlapping: the result depends on the init
    a, b = kmeans(x, 10, seed=7), kmeans(x, 10, seed=7)
    assert np.array_equal(a.labels, b.labels) and np.array_equal(a.centroids, b.centroids)
    assert a.history == b.history
    c = kmeans(x, 10, seed=8)
    assert not np.array_equal(a.centroids, c.centroids)


def test_inertia_never_increases():
    x, _ = blobs(n=3000, k=20, d=8, spread=1.0, seed=2)
    r = kmeans(x, 30, seed=0, tol=0.0, iters=40, batch_size=512)  # several chunks per pass
    h = np.array(r.history)
    assert len(h) == r.n_iter + 1 and r.n_iter > 3
    assert (np.diff(h) <= 1e-5 * h[:-1]).all(), h
    assert r.inertia == h[-1]


def test_n_init_keeps_best():
    x, _ = blobs(n=1500, k=10, spread=1.5, seed=1)
    one = kmeans(x, 10, seed=0)
    best = kmeans(x, 10, seed=0, n_init=3)
    assert best.inertia <= one.inertia


def test_empty_cluster_is_reseeded():
    from mlx_pn.clustering import kmeans as clusters

    x, y = blobs(n=600, k=3, seed=4)
    # Force the case: a k-means++ that puts one centre far from every point makes it empty at step 1.
    far = np.full((1, x.shape[1]), 1e3, dtype=np.float32)
    orig = clusters._kmeans_pp
    clusters._kmeans_pp = lambda X, x2, k, rng, bar=None: np.concatenate([orig(X, x2, k - 1, rng), far])
    try:
        r = kmeans(x, 4, seed=0)
    finally:
        clusters._kmeans_pp = orig
    assert r.n_reseeded >= 1 and r.n_empty == 0
    assert (np.bincount(r.labels, minlength=4) > 0).all()
    assert (np.diff(r.history) <= 1e-5 * np.array(r.history[:-1])).all()


@pytest.mark.filterwarnings("ignore:k=.*windows per cluster")
def test_duplicates_fewer_distinct_points_than_k():
    # 3 distinct points, each 20 times, k=5: two clusters must stay empty; no crash, no NaN, a warning.
    pts = np.array([[0, 0], [10, 0], [0, 10]], dtype=np.float32)
    x = np.repeat(pts, 20, axis=0)
    with pytest.warns(UserWarning, match="empty cluster"):
        r = kmeans(x, 5, seed=0)
    assert np.isfinite(r.centroids).all() and r.inertia == pytest.approx(0.0, abs=1e-4)
    assert r.n_empty == 2 and len(np.unique(r.labels)) == 3
    # With k = distinct groups, none is empty.
    r3 = kmeans(x, 3, seed=0)
    assert r3.n_empty == 0 and nmi(r3.labels, np.repeat([0, 1, 2], 20)) == pytest.approx(1.0)


def test_assign_matches_bruteforce():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2000, 24)).astype(np.float32) + 3.0  # offset: centring matters
    c = rng.standard_normal((40, 24)).astype(np.float32) + 3.0
    got = assign(x, c, batch_size=300)
    d = ((x[:, None, :].astype(np.float64) - c[None]) ** 2).sum(-1)
    want = d.argmin(1)
    assert got.dtype == np.int32 and got.shape == (2000,)
    assert np.allclose(d[np.arange(2000), got], d.min(1), rtol=1e-5)
    part = np.sort(d, axis=1)
    clear = (part[:, 1] - part[:, 0]) > 1e-3 * part[:, 0]
    assert np.array_equal(got[clear], want[clear]) and clear.mean() > 0.95
    # kmeans' own labels are the nearest centroid of the returned centroids.
    r = kmeans(x, 8, seed=0)
    assert np.array_equal(assign(x, r.centroids), r.labels)


def test_errors_say_the_fix():
    x, _ = blobs(n=20)
    with pytest.raises(ValueError, match=r"k=21 is larger than the number of windows N=20; lower k"):
        kmeans(x, 21)
    with pytest.raises(ValueError, match=r"k=0 must be at least 1"):
        kmeans(x, 0)
    bad = x.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match=r"NaN/inf.*\[3\].*drop or re-embed"):
        kmeans(bad, 2)
    with pytest.raises(ValueError, match="2-D"):
        kmeans(x[0], 2)
    with pytest.raises(ValueError, match="same model"):
        assign(x, np.zeros((2, 5), np.float32))


def test_warns_when_k_too_large():
    with pytest.warns(UserWarning, match=r"k=1024 .* N=10000 .*lower k to at most 200"):
        assert warn_if_k_too_large(10_000, 1024)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not warn_if_k_too_large(100_000, 1024)
    x, _ = blobs(n=100)
    with pytest.warns(UserWarning, match="windows per cluster"):
        kmeans(x, 10)


# ---------------------------------------------------------------------------------- histograms, NMI

def test_histogram_and_smoothing():
    h = histogram(np.array([0, 0, 1, 3]), 4)
    assert np.allclose(h, [0.5, 0.25, 0.0, 0.25])
    hs = histogram(np.array([0, 0, 1, 3]), 4, smoothing=1.0)
    assert hs.sum() == pytest.approx(1.0) and np.allclose(hs, [3 / 8, 2 / 8, 1 / 8, 2 / 8])
    with pytest.raises(ValueError, match="outside"):
        histogram(np.array([0, 4]), 4)


def test_nmi_known_values():
    a = np.array([0, 0, 1, 1, 2, 2])
    assert nmi(a, a) == pytest.approx(1.0)
    assert nmi(a, np.array([5, 5, 9, 9, 7, 7])) == pytest.approx(1.0)  # permutation / relabel invariant
    assert nmi([0, 0, 1, 1], [0, 1, 0, 1]) == pytest.approx(0.0, abs=1e-12)  # exactly independent
    rng = np.random.default_rng(0)
    assert nmi(rng.integers(0, 4, 20000), rng.integers(0, 4, 20000)) < 0.002
    # Hand value: a = [0,0,1,1], b = [0,0,0,1]: MI = 1.5 ln2 - 0.75 ln3, H(a)=ln2, H(b)=2ln2-0.75ln3.
    mi = 1.5 * np.log(2) - 0.75 * np.log(3)
    ha, hb = np.log(2), 2 * np.log(2) - 0.75 * np.log(3)
    assert nmi([0, 0, 1, 1], [0, 0, 0, 1]) == pytest.approx(mi / ((ha + hb) / 2))
    assert nmi([1, 1, 1], [0, 0, 0]) == 1.0


# ---------------------------------------------------------------------------------------- sampling

def test_importance_weights_hand_example():
    w = importance_weights([0.5, 0.5, 0.0], [0.25, 0.5, 0.25], smoothing=0.0)
    assert np.allclose(w, [2.0, 1.0, 0.0])
    w = importance_weights([2, 2, 0], [1, 2, 1])  # counts are normalised
    assert np.allclose(w, [2.0, 1.0, 0.0], rtol=1e-5)
    # A domain cluster the generic corpus lacks: finite (large) weight with smoothing, error without.
    w = importance_weights([0.5, 0.5], [1.0, 0.0], smoothing=1e-6)
    assert np.isfinite(w).all() and w[1] > 1e4
    with pytest.raises(ValueError, match="smoothing > 0"):
        importance_weights([0.5, 0.5], [1.0, 0.0], smoothing=0.0)
    with pytest.raises(ValueError, match="same k-means"):
        importance_weights([1, 1], [1, 1, 1])


def test_resample_matches_domain_histogram_and_is_deterministic():
    rng = np.random.default_rng(0)
    k = 20
    generic = rng.integers(0, k, 5000)
    dom = rng.dirichlet(np.full(k, 0.3))
    idx = resample(generic, dom, 50_000, seed=3)
    assert idx.shape == (50_000,) and idx.min() >= 0 and idx.max() < 5000
    got = histogram(generic[idx], k)
    assert 0.5 * np.abs(got - dom).sum() < 0.02
    assert np.array_equal(idx, resample(generic, dom, 50_000, seed=3))
    assert not np.array_equal(idx, resample(generic, dom, 50_000, seed=4))
    s = resample_stats(idx, generic, dom, k)
    assert s["tv_distance"] < 0.02 and s["lost_mass"] == 0.0 and s["n"] == 50_000


def test_resample_without_replacement():
    generic = np.array([0] * 10 + [1] * 100)
    idx = resample(generic, [0.5, 0.5], 40, seed=0, replace=False)
    assert len(np.unique(idx)) == 40  # each window at most once
    assert (generic[idx] == 0).sum() == 10  # cluster 0 is exhausted; the excess went to cluster 1
    assert np.array_equal(idx, resample(generic, [0.5, 0.5], 40, seed=0, replace=False))
    with pytest.raises(ValueError, match="replace=True or lower n"):
        resample(generic, [0.5, 0.5], 200, replace=False)


def test_resample_renormalises_missing_clusters():
    generic = np.array([0, 0, 1, 1])  # no generic window in cluster 2
    dom = [0.25, 0.25, 0.5]
    assert lost_mass(generic, dom) == 0.5
    with pytest.warns(UserWarning, match="50.00% of the domain's cluster mass"):
        idx = resample(generic, dom, 1000, seed=0)
    assert set(generic[idx]) == {0, 1}
    s = resample_stats(idx, generic, dom, 3)
    assert s["lost_mass"] == 0.5 and s["tv_distance"] >= 0.5 and s["tv_reachable"] < 0.1
    with pytest.raises(ValueError, match="no generic window"):
        resample(generic, [0, 0, 1], 10)


def test_resample_stats_hand_example():
    generic = np.array([0, 0, 0, 1])  # n_c = [3, 1], P(c|gen) = [0.75, 0.25]
    dom = np.array([0.5, 0.5])  # w = [2/3, 2/3, 2/3, 2]
    w = np.array([2 / 3] * 3 + [2.0])
    ess = w.sum() ** 2 / (w ** 2).sum()  # Kish = 16 / (4/3 + 4) = 3
    s = resample_stats(np.array([0, 0, 3, 1]), generic, dom, 2)
    assert s["ess"] == pytest.approx(ess) == pytest.approx(3.0)
    assert s["ess_fraction"] == pytest.approx(0.75)
    assert s["unique_fraction"] == pytest.approx(3 / 4) and s["max_repeats"] == 2
    assert s["tv_distance"] == pytest.approx(0.25)  # drawn clusters [0,0,1,0] -> [0.75, 0.25] vs [0.5, 0.5]
    assert s["lost_mass"] == 0.0 and s["n_generic"] == 4
    # A domain that looks like the generic corpus keeps every sample effective.
    assert resample_stats([0], generic, [3, 1], 2)["ess"] == pytest.approx(4.0)


# ------------------------------------------------------------------------------------------- report

def test_cluster_report_sections():
    texts = (["The court held that the contract was void and the appeal dismissed."] * 30
             + ["The patient presented with fever; the doctor prescribed antibiotics."] * 30)
    labels = np.array([0] * 30 + [1] * 30)
    rep = cluster_report(labels, texts, 3, domain_labels={"legal": np.array([0] * 9 + [1]),
                                                         "medical": np.array([1] * 10)})
    for section in ("# Cluster report", "## Summary", "## Clusters", "## Examples", "## Domains"):
        assert section in rep
    assert "empty clusters: [2]" in rep
    line0 = next(ln for ln in rep.splitlines() if ln.startswith("| 0 |"))
    assert "court" in line0 and "patient" not in line0 and "50.0%" in line0
    line1 = next(ln for ln in rep.splitlines() if ln.startswith("| 1 |"))
    assert "patient" in line1 or "fever" in line1
    assert "| legal | 10 | 0.90 | 0 (90%), 1 (10%) |" in rep
    assert "| medical | 10 | 1.00 | 1 (100%) | 0.00 | 1.0 |" in rep
    assert "The court held" in rep and "### Cluster 1 (30 windows, 50.0%)" in rep
    with pytest.raises(ValueError, match="one text per window"):
        cluster_report(labels, texts[:5], 3)


def test_the_kmeans_pp_start_shows_progress(capsys):
    """k = 1024 on 100k windows spent 72 s in the k-means++ start with nothing on the screen."""
    from mlx_pn.clustering.kmeans import kmeans

    x = np.random.default_rng(0).normal(size=(400, 8)).astype(np.float32)
    kmeans(x, 16, iters=2, progress=True)
    err = capsys.readouterr().err
    assert "k-means++ start" in err and "/16 [" in err
    kmeans(x, 16, iters=2)
    assert capsys.readouterr().err == ""
