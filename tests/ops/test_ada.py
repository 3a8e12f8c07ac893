import math

import pytest
import torch
import torch.nn.functional as F

from histolib.ops.ada import BGC_OPS, COLOUR, GEOMETRIC, OPS, PAPER_OPS, AdaController, AugmentPipe


def _square_pair(b=16, size=32):
    image = torch.full((b, 3, size, size), -1.0)
    label = torch.zeros(b, size, size, dtype=torch.long)
    image[:, :, 8:18, 6:20] = 1.0
    label[:, 8:18, 6:20] = 1
    return image, label


def test_labelled_square_lands_where_the_image_square_lands():
    pipe = AugmentPipe.from_ops(list(GEOMETRIC))
    image, label = _square_pair()
    params = pipe.sample(16, 1.0, 32, 32, torch.Generator().manual_seed(0))
    out, lab = pipe.apply(image, label, params)
    moved = 0
    for i in range(16):
        bright = out[i].mean(0) > 0
        square = lab[i] == 1
        iou = (bright & square).sum() / (bright | square).sum()
        assert iou > 0.85, f"sample {i}: IoU {float(iou):.2f}"
        moved += int(not torch.equal(square, label[i] == 1))
    assert moved >= 12  # the geometry did change most samples


@pytest.mark.parametrize("onehot", [False, True])
def test_labels_keep_their_classes(onehot):
    g = torch.Generator().manual_seed(1)
    label = torch.randint(0, 4, (8, 32, 32), generator=g)
    label[:, :, :16] = 2
    image = torch.rand(8, 3, 32, 32, generator=g) * 2 - 1
    lab_in = F.one_hot(label, 4).permute(0, 3, 1, 2).float() if onehot else label
    _, lab = AugmentPipe()(image, lab_in, p=1.0, generator=g)
    if onehot:
        assert set(lab.unique().tolist()) <= {0.0, 1.0}
        assert torch.equal(lab.sum(1), torch.ones(8, 32, 32))
    else:
        assert lab.dtype == torch.long and set(lab.unique().tolist()) <= {0, 1, 2, 3}


def test_colour_ops_touch_the_image_only():
    pipe = AugmentPipe.from_ops(list(COLOUR))
    image, label = _square_pair(b=8)
    params = pipe.sample(8, 1.0, 32, 32, torch.Generator().manual_seed(2))
    out, lab = pipe.apply(image, label, params)
    assert torch.equal(lab, label)
    assert params.colour_on.all() and not params.geom_on.any()
    assert not torch.allclose(out, image)


def test_p_zero_is_the_identity():
    image, label = _square_pair(b=4)
    out, lab = AugmentPipe()(image, label, p=0.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, image) and torch.equal(lab, label)


def test_xflip_and_rot90_are_exact():
    g = torch.Generator().manual_seed(3)
    image = torch.rand(32, 3, 8, 8, generator=g)
    label = torch.randint(0, 3, (32, 8, 8), generator=g)
    flip = AugmentPipe.from_ops(["xflip"])
    params = flip.sample(32, 1.0, 8, 8, g)
    out, lab = flip.apply(image, label, params)
    on = params.geom_on
    assert 0 < on.sum() < 32  # half of the samples, in expectation
    torch.testing.assert_close(out[on], image[on].flip(-1), atol=1e-5, rtol=0)
    assert torch.equal(lab[on], label[on].flip(-1)) and torch.equal(out[~on], image[~on])
    rot = AugmentPipe.from_ops(["rotate90"])
    params = rot.sample(32, 1.0, 8, 8, g)
    _, lab = rot.apply(image, label, params)
    for i in range(32):
        assert any(torch.equal(lab[i], torch.rot90(label[i], k, dims=(0, 1))) for k in range(4))


def test_same_params_give_the_same_geometry_to_stacked_copies():
    pipe = AugmentPipe()
    image, label = _square_pair(b=4)
    params = pipe.sample(4, 1.0, 32, 32, torch.Generator().manual_seed(4)).repeat(2)
    out, lab = pipe.apply(torch.cat([image, image]), torch.cat([label, label]), params)
    assert torch.equal(out[:4], out[4:]) and torch.equal(lab[:4], lab[4:])


def test_gradients_flow_to_the_images():
    image = torch.rand(4, 3, 16, 16, requires_grad=True)
    out, _ = AugmentPipe()(image * 2 - 1, None, p=1.0, generator=torch.Generator().manual_seed(5))
    out.sum().backward()
    assert image.grad is not None and image.grad.abs().sum() > 0


def test_draws_are_reproducible_and_validated():
    pipe = AugmentPipe()
    a = pipe.sample(4, 0.5, 16, 16, torch.Generator().manual_seed(9))
    b = pipe.sample(4, 0.5, 16, 16, torch.Generator().manual_seed(9))
    assert torch.equal(a.geom, b.geom) and torch.equal(a.colour, b.colour)
    with pytest.raises(ValueError, match="p must be"):
        pipe.sample(4, 1.5, 16, 16)
    with pytest.raises(ValueError, match="unknown augmentation"):
        AugmentPipe.from_ops(["cutout"])


def test_p_rises_when_d_is_overconfident_and_falls_otherwise():
    step = 8 * 4 / (1.0 * 1000)  # batch * interval / (kimg * 1000)
    ada = AdaController(target=0.6, interval=4, kimg=1.0, p=0.5)
    for _ in range(4):
        ada.accumulate([torch.ones(8, 1, 3, 3), torch.ones(8, 1, 2, 2)])  # sign(D(real)) = 1 > 0.6
        ada.step(8)
    assert ada.r_t == 1.0 and math.isclose(ada.p, 0.5 + step)
    for _ in range(4):
        ada.accumulate(torch.cat([torch.ones(8), -torch.ones(8)]))     # r_t = 0 < 0.6
        ada.step(8)
    assert ada.r_t == 0.0 and math.isclose(ada.p, 0.5)
    low = AdaController(kimg=1.0, p=0.0)
    for _ in range(4):
        low.accumulate(-torch.ones(4))
        low.step(8)
    assert low.p == 0.0  # clipped at 0
    restored = AdaController()
    restored.load_state_dict(ada.state_dict())
    assert restored.p == ada.p


def test_papers_set_is_geometric_only_and_moves_label_and_image_together():
    assert set(PAPER_OPS) <= set(GEOMETRIC) and not set(PAPER_OPS) & set(COLOUR)
    assert set(BGC_OPS) == set(OPS)
    pipe = AugmentPipe.from_ops(PAPER_OPS)
    image, label = _square_pair()
    params = pipe.sample(16, 1.0, 32, 32, torch.Generator().manual_seed(6))
    assert not params.colour_on.any()
    out, lab = pipe.apply(image, label, params)
    for i in range(16):
        bright, square = out[i].mean(0) > 0, lab[i] == 1
        assert (bright & square).sum() / (bright | square).sum() > 0.85
