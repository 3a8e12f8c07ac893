"""Grid elastic deformation (seed 000, Sec. II-A): geometry, padding, labels, seeds, batching."""

import numpy as np
import pytest
import torch
from scipy import ndimage

from histolib.errors import ParamError
from histolib.ops.deform import (
    INTERPOLATIONS,
    displacement_field,
    elastic_deform,
    elastic_deform_numpy,
    random_displacement,
    warp,
)


def _uniform(batch, dy, dx, points=3):
    """Control displacements equal at every point: the dense field is that constant translation."""
    control = torch.empty(batch, 2, points, points, dtype=torch.float64)
    control[:, 0], control[:, 1] = dy, dx
    return control


def _images(batch=2, channels=3, height=9, width=13, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, channels, height, width, generator=g, dtype=torch.float64) * 255


def test_dense_field_passes_through_control_points_and_matches_scipy_spline():
    control = random_displacement(2, (9, 13), sigma=5.0, generator=torch.Generator().manual_seed(0)).double()
    field = displacement_field(control, (9, 13))
    assert field.shape == (2, 2, 9, 13)
    # 3 control points sit at pixels 0, 4, 8 (rows) and 0, 6, 12 (columns)
    assert torch.allclose(field[:, :, ::4, ::6], control, atol=1e-12)
    # elasticdeform's interpolation = scipy's order-3 spline with mirror boundary at j (P-1)/(n-1)
    rows, cols = np.meshgrid(np.arange(9) * 2 / 8, np.arange(13) * 2 / 12, indexing="ij")
    for b in range(2):
        for c in range(2):
            ref = ndimage.map_coordinates(control[b, c].numpy(), [rows, cols], order=3, mode="mirror")
            np.testing.assert_allclose(field[b, c].numpy(), ref, atol=1e-10)


def test_displacement_statistics_at_control_points():
    control = random_displacement(4000, (256, 256), sigma=20.0, generator=torch.Generator().manual_seed(1))
    assert control.shape == (4000, 2, 3, 3)
    assert control.std().item() == pytest.approx(20.0, rel=0.02)
    assert abs(control.mean().item()) < 0.2


@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
def test_zero_displacement_is_identity(interpolation):
    images = _images()
    labels = torch.randint(0, 4, (2, 9, 13), generator=torch.Generator().manual_seed(2), dtype=torch.uint8)
    out, out_labels = elastic_deform(images, labels, displacement=_uniform(2, 0.0, 0.0),
                                     interpolation=interpolation)
    assert torch.allclose(out, images, atol=1e-9)
    assert torch.equal(out_labels, labels)


@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
@pytest.mark.parametrize("dy, dx", [(3, -2), (-7, 15), (20, 0)])
def test_integer_translation_uses_symmetric_padding(interpolation, dy, dx):
    """out(y, x) = in(y + dy, x + dx); beyond the border numpy pad(mode='symmetric') (c b a | a b c)."""
    images = _images(batch=1, channels=2, height=8, width=6)
    labels = torch.arange(48, dtype=torch.int64).view(1, 8, 6)
    out, out_labels = elastic_deform(images, labels, displacement=_uniform(1, dy, dx),
                                     interpolation=interpolation)
    pad = 24
    padded = np.pad(images[0].numpy(), ((0, 0), (pad, pad), (pad, pad)), mode="symmetric")
    expected = padded[:, pad + dy:pad + dy + 8, pad + dx:pad + dx + 6]
    np.testing.assert_allclose(out[0].numpy(), expected, atol=1e-8)
    padded_labels = np.pad(labels[0].numpy(), pad, mode="symmetric")
    assert np.array_equal(out_labels[0].numpy(), padded_labels[pad + dy:pad + dy + 8, pad + dx:pad + dx + 6])


def test_keys_half_pixel_shift_matches_hand_weights():
    """Keys a=-0.75 at offset 0.5: weights -0.09375, 0.59375, 0.59375, -0.09375, on the row padded
    symmetrically (so the last pixels read ..., f6, f7 | f7, f6)."""
    row = np.array([10.0, 50.0, 20.0, 80.0, 40.0, 60.0, 30.0, 70.0])
    images = torch.tensor(row).view(1, 1, 1, 8).expand(1, 1, 4, 8).contiguous()
    out, _ = elastic_deform(images, displacement=_uniform(1, 0.0, 0.5), interpolation="keys")
    f = np.pad(row, 2, mode="symmetric")       # f[x + 2] is row[x]
    for x in range(8):
        hand = 0.59375 * (f[x + 2] + f[x + 3]) - 0.09375 * (f[x + 1] + f[x + 4])
        assert out[0, 0, 2, x].item() == pytest.approx(min(max(hand, 10.0), 80.0), abs=1e-6)


def test_labels_take_the_nearest_pixel():
    """A (0.55, 0.45) px translation moves labels by (1, 0) px: floor(t + 0.5)."""
    labels = torch.arange(30, dtype=torch.int32).view(1, 5, 6)
    _, out = elastic_deform(torch.zeros(1, 1, 5, 6), labels, displacement=_uniform(1, 0.55, 0.45))
    assert torch.equal(out[0, :4], labels[0, 1:]) and torch.equal(out[0, 4], labels[0, 4])


def test_bspline_matches_scipy_order3_reflect():
    images = _images(batch=2, channels=2, height=11, width=10, seed=3)
    control = random_displacement(2, (11, 10), sigma=4.0, generator=torch.Generator().manual_seed(4)).double()
    field = displacement_field(control, (11, 10))
    out, _ = warp(images, field, interpolation="bspline")
    rows, cols = np.meshgrid(np.arange(11), np.arange(10), indexing="ij")
    for b in range(2):
        for c in range(2):
            src = images[b, c].numpy()
            ref = ndimage.map_coordinates(src, [rows + field[b, 0].numpy(), cols + field[b, 1].numpy()],
                                          order=3, mode="reflect")
            np.testing.assert_allclose(out[b, c].numpy(), np.clip(ref, src.min(), src.max()), atol=1e-8)


@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
def test_labels_stay_in_their_classes_and_images_in_their_range(interpolation):
    images = torch.zeros(3, 1, 32, 32)
    images[:, :, 8:24, 8:24] = 1.0                     # a step: cubic kernels overshoot at its edges
    labels = torch.full((3, 32, 32), 7, dtype=torch.int16)
    labels[:, 8:24, 8:24] = 2
    labels[:, 12:16, 12:16] = 5
    out, out_labels = elastic_deform(images, labels, sigma=6.0, generator=torch.Generator().manual_seed(5),
                                     interpolation=interpolation)
    assert out_labels.dtype == torch.int16
    assert set(out_labels.unique().tolist()) <= {2, 5, 7}
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert not torch.equal(out_labels, labels)


def test_seeded_reproducible_and_different_across_seeds():
    images = _images(batch=2, height=16, width=16)
    labels = (images[:, 0] > 128).to(torch.uint8)

    def run(seed):
        return elastic_deform(images, labels, sigma=3.0, generator=torch.Generator().manual_seed(seed))

    a, b, c = run(7), run(7), run(8)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.allclose(a[0], c[0])


def test_batched_equals_per_sample():
    n = 10                                       # more than one internal block of 8 samples
    images = _images(batch=n, height=12, width=12)
    labels = (images[:, 1] > 100).to(torch.int64)
    control = random_displacement(n, (12, 12), sigma=3.0, generator=torch.Generator().manual_seed(9))
    for interpolation in INTERPOLATIONS:
        out, out_labels = elastic_deform(images, labels, displacement=control, interpolation=interpolation)
        for i in range(n):
            one, one_label = elastic_deform(images[i:i + 1], labels[i:i + 1], displacement=control[i:i + 1],
                                            interpolation=interpolation)
            assert torch.allclose(out[i:i + 1], one, atol=1e-9)
            assert torch.equal(out_labels[i:i + 1], one_label)


def test_square_in_image_and_label_move_together():
    images = torch.zeros(2, 3, 48, 48)
    images[:, :, 16:32, 16:32] = 1.0
    labels = (images[:, :1] > 0.5).to(torch.uint8)      # (B, 1, H, W) form
    out, out_labels = elastic_deform(images, labels, sigma=5.0, generator=torch.Generator().manual_seed(11))
    assert out_labels.shape == (2, 1, 48, 48)
    moved = (out[:, :1] > 0.5).to(torch.uint8)
    assert not torch.equal(out_labels, labels)            # the square did move ...
    assert (moved != out_labels).float().mean() < 0.01    # ... and the label moved with it


def test_numpy_entry_point():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (16, 20, 3), dtype=np.uint8)
    label = (rng.random((16, 20)) > 0.5).astype(np.int64) * 3
    a_img, a_lab = elastic_deform_numpy(image, label, seed=4, sigma=4.0)
    b_img, b_lab = elastic_deform_numpy(image, label, seed=4, sigma=4.0)
    assert a_img.dtype == np.uint8 and a_img.shape == image.shape and a_lab.dtype == np.int64
    assert np.array_equal(a_img, b_img) and np.array_equal(a_lab, b_lab)
    assert set(np.unique(a_lab).tolist()) <= {0, 3}
    same, _ = elastic_deform_numpy(image, None, seed=4, sigma=0.0)
    assert np.array_equal(same, image)


def test_empty_batch():
    out, out_labels = elastic_deform(torch.zeros(0, 3, 8, 8), torch.zeros(0, 8, 8, dtype=torch.uint8))
    assert out.shape == (0, 3, 8, 8) and out_labels.shape == (0, 8, 8)


@pytest.mark.parametrize("kwargs, word", [
    ({"images": torch.zeros(2, 3, 8, 8, dtype=torch.uint8)}, "images"),
    ({"labels": torch.zeros(2, 8, 9, dtype=torch.uint8)}, "labels"),
    ({"labels": torch.zeros(2, 8, 8)}, "labels"),
    ({"displacement": torch.zeros(3, 2, 3, 3)}, "displacement"),
    ({"displacement": torch.zeros(2, 3, 3)}, "displacement"),
    ({"interpolation": "linear"}, "interpolation"),
    ({"points": 1}, "points"),
])
def test_bad_inputs_raise_param_error(kwargs, word):
    args = {"images": torch.zeros(2, 3, 8, 8), **kwargs}
    with pytest.raises(ParamError, match=word):
        elastic_deform(**args)
