import numpy as np
import pytest

from histolib.ops import placement as PL


def _disc(radius):
    yy, xx = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    return yy ** 2 + xx ** 2 <= radius ** 2


def _blobs(n, rng):
    out = []
    for _ in range(n):
        a, b = rng.uniform(2.5, 5, size=2)
        r = int(np.ceil(max(a, b)))
        yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
        out.append((yy / a) ** 2 + (xx / b) ** 2 <= 1)
    return out


def _prior(h=64, w=64):
    yy, xx = np.mgrid[:h, :w]
    return np.exp(-((yy - h / 3) ** 2 + (xx - w / 2) ** 2) / (2 * (h / 4) ** 2))


def test_spacing_distribution_histogram_and_sampling():
    s = PL.SpacingDistribution.from_samples(np.array([2.0, 4.0, 4.0, 6.0]), n_bins=2)
    np.testing.assert_allclose(s.edges, [2, 4, 6])
    np.testing.assert_allclose(s.probs, [0.25, 0.75])
    draws = [s.sample(np.random.default_rng(i)) for i in range(200)]
    assert min(draws) >= 2 and max(draws) <= 6
    assert 0.6 < np.mean(np.array(draws) >= 4) < 0.9
    assert PL.SpacingDistribution.constant(3.0).sample(np.random.default_rng(0)) == 3.0
    with pytest.raises(ValueError, match="no spacing samples"):
        PL.SpacingDistribution.from_samples(np.zeros(0))
    with pytest.raises(ValueError):
        PL.SpacingDistribution(np.array([0.0, 1.0]), np.array([0.5]))


def test_nearest_centroid_distances_by_hand():
    inst = np.zeros((20, 30), np.int32)
    inst[2:4, 2:4] = 1  # centroid (2.5, 2.5), 4 px
    inst[2:4, 12:14] = 2  # centroid (2.5, 12.5)
    inst[15:18, 2:5] = 5  # centroid (16, 3), 9 px
    d = PL.nearest_centroid_distances(inst)
    np.testing.assert_allclose(d, [10.0, 10.0, np.hypot(13.5, 0.5)])
    d_r = PL.nearest_centroid_distances(inst, subtract_radius=True)
    np.testing.assert_allclose(d_r, [10 - np.sqrt(4 / np.pi), 10 - np.sqrt(4 / np.pi),
                                     np.hypot(13.5, 0.5) - np.sqrt(4 / np.pi)])
    assert PL.nearest_centroid_distances(np.zeros((5, 5), np.int32)).size == 0
    s = PL.spacing_distribution([inst], n_bins=3, subtract_radius=False)
    assert s.edges[0] == 10.0 and np.isclose(s.edges[-1], np.hypot(13.5, 0.5))


def test_centred_stack_centres_each_blob_on_its_centroid():
    a = np.ones((3, 5), bool)
    b = np.ones((1, 1), bool)
    st = PL.centred_stack([a, b])
    assert st.masks.shape == (2, 5, 5) and st.radius == 2
    np.testing.assert_array_equal(st.masks[0, 1:4], 1)
    assert st.masks[1].sum() == 1 and st.masks[1, 2, 2]
    with pytest.raises(ValueError, match="non-empty"):
        PL.centred_stack([np.zeros((2, 2), bool)])


@pytest.mark.parametrize("top_fraction", [None, 0.16])
def test_greedy_placement_never_overlaps_and_keeps_blobs_inside(top_fraction):
    rng = np.random.default_rng(0)
    blobs = _blobs(40, rng)
    stack = PL.centred_stack(blobs)
    pl = PL.greedy_placement(_prior(), stack, PL.SpacingDistribution.constant(3.0), rng,
                             patience=20, top_fraction=top_fraction)
    assert pl.n > 10
    inst = pl.instances
    for k, ((y, x), b) in enumerate(zip(pl.centres, pl.blob_ids, strict=True), start=1):
        blob = stack.masks[b]
        # every pixel of the placed blob still carries its id: nothing overwrote it
        assert (inst == k).sum() == blob.sum()
        ys, xs = np.nonzero(blob)
        ys, xs = ys - stack.radius + y, xs - stack.radius + x
        assert ys.min() >= 0 and xs.min() >= 0 and ys.max() < 64 and xs.max() < 64
        assert np.all(inst[ys, xs] == k)
    assert len(set(pl.blob_ids.tolist())) == pl.n  # each blob used once


def test_greedy_placement_respects_the_minimum_spacing():
    rng = np.random.default_rng(1)
    stack = PL.centred_stack(_blobs(60, rng))
    spacing = PL.SpacingDistribution.from_samples(rng.uniform(2, 9, 50))
    pl = PL.greedy_placement(np.ones((80, 80)), stack, spacing, rng, patience=30)
    assert pl.n > 10
    for i in range(pl.n):
        for j in range(i + 1, pl.n):  # j placed after i: its pixels stay outside i's disc
            ys, xs = np.nonzero(pl.instances == j + 1)
            d = np.hypot(ys - pl.centres[i, 0], xs - pl.centres[i, 1])
            assert d.min() > pl.radii[i]


def test_greedy_placement_follows_zero_regions_and_first_fit_order():
    prior = np.zeros((40, 40))
    prior[:, 20:] = 1.0
    rng = np.random.default_rng(2)
    pl = PL.greedy_placement(prior, _blobs(30, rng), PL.SpacingDistribution.constant(0.0), rng,
                             patience=50)
    assert pl.n > 3 and np.all(pl.centres[:, 1] >= 20)
    # one possible location: the too-large first blob is skipped, the second placed, not the third
    point = np.zeros((40, 40))
    point[20, 20] = 1.0
    pl = PL.greedy_placement(point, [_disc(25), _disc(6), _disc(2)], PL.SpacingDistribution.constant(0.0),
                             rng, patience=5)
    assert pl.n == 1 and pl.blob_ids[0] == 1 and tuple(pl.centres[0]) == (20, 20)


def test_greedy_placement_paper_rule_and_validation():
    rng = np.random.default_rng(3)
    blobs = _blobs(20, rng)
    pl = PL.greedy_placement(_prior(), blobs, PL.SpacingDistribution.constant(2.0), rng)
    assert pl.n >= 1 and pl.attempts == pl.n + 1 or pl.n == 20
    a = PL.greedy_placement(_prior(), blobs, PL.SpacingDistribution.constant(2.0),
                            np.random.default_rng(5), patience=5)
    b = PL.greedy_placement(_prior(), blobs, PL.SpacingDistribution.constant(2.0),
                            np.random.default_rng(5), patience=5)
    np.testing.assert_array_equal(a.instances, b.instances)
    with pytest.raises(ValueError, match="patience"):
        PL.greedy_placement(_prior(), blobs, PL.SpacingDistribution.constant(2.0), rng, patience=0)
    with pytest.raises(ValueError, match="top_fraction"):
        PL.greedy_placement(_prior(), blobs, PL.SpacingDistribution.constant(2.0), rng, top_fraction=0)
    with pytest.raises(ValueError, match="prior"):
        PL.greedy_placement(-_prior(), blobs, PL.SpacingDistribution.constant(2.0), rng)
    empty = PL.greedy_placement(np.zeros((10, 10)), blobs, PL.SpacingDistribution.constant(2.0), rng)
    assert empty.n == 0 and not empty.instances.any()


def test_location_sampler_top_fraction_draws_only_from_the_top_values():
    prior = np.arange(100, dtype=float).reshape(10, 10)
    sampler = PL.LocationSampler(prior, top_fraction=0.05)
    eligible = np.ones((10, 10))
    eligible.ravel()[99] = 0.0  # the best pixel is taken: top-5 of the other 99 is 94..98
    rng = np.random.default_rng(0)
    draws = {sampler.draw(eligible, rng) for _ in range(200)}
    assert draws == {94, 95, 96, 97, 98}
    assert PL.LocationSampler(prior).draw(np.zeros((10, 10)), rng) == -1


def test_random_placement_counts_and_relabels():
    rng = np.random.default_rng(4)
    pl = PL.random_placement(_prior(), _blobs(10, rng), 25, rng)
    ids = np.unique(pl.instances)
    np.testing.assert_array_equal(ids[1:], np.arange(1, pl.n + 1))
    assert pl.n <= 25 and np.all(np.isnan(pl.radii))
    assert PL.random_placement(_prior(), [], 5, rng).n == 0


def test_prior_correlation():
    prior = _prior()
    inst = (prior > 0.5).astype(np.int32)
    assert PL.prior_correlation(inst, prior, sigma=2.0) > 0.8
    assert PL.prior_correlation((prior < 0.2).astype(np.int32), prior, sigma=2.0) < -0.5
    assert np.isnan(PL.prior_correlation(np.zeros((64, 64), np.int32), prior, sigma=2.0))
    with pytest.raises(ValueError, match="same shape"):
        PL.prior_correlation(np.zeros((3, 3), np.int32), prior, 1.0)
