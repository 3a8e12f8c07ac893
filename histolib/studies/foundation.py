"""Params sections shared by every notebook: the data builder and the segmentation harness."""

from __future__ import annotations

from histolib.config import knob, section


@section("data")
class DataParams:
    """What the builder (``histolib build-data``, the DVC ``data`` stage) writes to ``data/prepared``."""

    source: str = knob("glomerulus patches: 'phantom' or a folder with images/*.png, masks/*.png "
                       "(binary 0/255), optional labels.csv (file, class GS|nonGS, slide); relative to the project "
                       "root; a DVC dependency of the data stage")
    nuclei_source: str = knob("nuclei fields: 'phantom' or a folder with images/*.png and 16-bit instance "
                              "masks/*.png (MoNuSeg-like)")
    stain: str = knob("phantom stain for glomerulus patches and tiles", choices=("pas", "he"))
    patch_size: int = knob("glomerulus patch side in px (papers 000/001: 256)", min=16, max=1024)
    fill: list[float] = knob("phantom glomerulus diameter as a fraction of the patch [min, max]", min=0.1, max=1.0,
                             length=2)
    sclerosed_fraction: float = knob("share of phantom glomeruli that are globally sclerosed", min=0.0, max=0.5)
    calibration: str = knob("phantom realism: 'none' renders the default phantom (bit for bit), or a calibration "
                            "JSON of a real set (histolib calibrate-phantom; e.g. calibration/glomeruli_crops.json, "
                            "relative to the project root; its kind must be the data.stain) switches glomerulus "
                            "patches and tiles to the calibrated mode: per-slide stain vectors, stain amounts and "
                            "focus drawn from the real 5th-50th-95th percentiles (split normal, widened 1.25x for "
                            "domain randomisation) and realistic structures (irregular crowded tubules with dense "
                            "nuclei, fibrous interstitium with capillaries and red cells, white lumina and urinary "
                            "space); histolib.data.phantom.PhantomCalibration")
    n_gan: int = knob("patches for GAN training, disjoint from the U-Net sets (paper 000: 660)", min=1)
    n_train: int = knob("U-Net training patches (paper 000: 660)", min=1)
    n_val: int = knob("validation patches (paper 000: 400)", min=1)
    n_test: int = knob("test patches (paper 000: 431)", min=1)
    real_split: list[float] = knob("real data: fractions for [gan, train, val, test], split by slide",
                                   min=0.0, max=1.0, length=4)
    tile_size: int = knob("tissue tiles with normal + sclerosed glomeruli and 5 compartments (papers 002/003)",
                          min=32, max=4096)
    glomerulus_diameter: float = knob("glomerulus diameter in tiles, px", min=8)
    n_tiles: list[int] = knob("tissue tiles per split [train, val, test]", min=0, length=3)
    crop_size: int = knob("sclerosed-centred crops cut from the tiles, px", min=16)
    nuclei_size: int = knob("nuclei field side in px", min=32, max=2048)
    nuclei_style: str = knob("phantom nuclei fields: fluorescence (the nuclei paper's modality, BBBC-like "
                             "grey DAPI/Hoechst) or he (H&E); a real folder's modality is its own (say which "
                             "in this key, it is recorded beside the results)", choices=("he", "fluorescence"))
    nucleus_diameter: float = knob("median nucleus diameter, px: of the phantom fields, and the diameter real "
                                   "nuclei folders are rescaled to (see nuclei_rescale; paper 004: ~14 px, "
                                   "blob area 155 px; BBBC at its own scale ~17, MoNuSeg at 40x 22)", min=3)
    nuclei_rescale: bool = knob("real nuclei folders: rescale every split by data.nucleus_diameter / the "
                                "median equivalent nucleus diameter of the TRAINING split's masks (never "
                                "from validation or test masks); false keeps the files' pixel size")
    n_nuclei: list[int] = knob("nuclei fields per split [train, val, test]; real nuclei "
                                   "folders: split fractions (by image, or by labels.csv's slide)", min=0,
                               length=3)


@section("unet")
class UNetParams:
    """The segmentation harness: U-Net (Ronneberger et al.) training and evaluation."""

    width: int = knob("channels of the first level (doubles per level; paper U-Net: 64)", min=1)
    depth: int = knob("number of levels (poolings = depth - 1)", min=2, max=7)
    epochs: int = knob("training epochs; the checkpoint with the best validation Dice is kept", min=1)
    batch_size: int = knob("images per optimisation step", min=1)
    lr: float = knob("Adam learning rate", min=0.0, max=1.0)
    augment_p: float = knob("probability of a live flip and of a 90-degree rotation (paper 000: 0.5)",
                            min=0.0, max=1.0)
    loss: str = knob("cross-entropy, or cross-entropy + soft Dice", choices=("ce", "ce_dice"))
    n_seeds: int = knob("independent trainings per configuration (paper 000: 5)", min=1)
    threads: int = knob("torch CPU threads (0: torch's default)", min=0)


@section("sim2real")
class Sim2RealParams:
    """Notebook 00: phantom realism, measured against real folders only when pointed at them (a real run)."""

    crops_source: str = knob("real glomerulus crops for the realism checks and the real half of the sim-to-real "
                             "check, relative to the project root; empty (the default): skipped, so the default "
                             "pipeline never reads real data. A real folder here makes the run a real run "
                             "(histolib.paths.data_tag): every output then goes to the git-ignored "
                             "results/real/<tag>/00/ (`histolib run-real 00` sets it)")
    sets_source: str = knob("folder searched for every real set (subfolders with images/ and masks/: glomerulus "
                            "crops, H&E and fluorescence nuclei) compared with the phantom and measured for the "
                            "calibration report; empty (the default): skipped. Like crops_source, a folder here "
                            "makes the run a real run whose outputs stay out of git")
    n_real: int = knob("real images used at most per set (all 504 crops in ../shared)", min=1)
    n_grid: int = knob("examples per dataset grid", min=1, max=64)
    real_fill: float = knob("glomerulus diameter / crop side in the real crops (~0.99: tight crops); "
                            "real crops are rescaled so the glomerulus matches the phantom's mean fill", min=0.1)
    n_calibration: int = knob("images per real set measured for the calibration report (a seeded random subset; "
                              "histolib.calibration), and phantom images rendered at each set's scale", min=1)
    nuclei_reference_fraction: float = knob("nuclei sim-to-real (histolib.studies.transfer): share of each real "
                                            "nucleus set's images (seeded) that gives its scale and trains the "
                                            "real-trained comparison HoVer-Net; the rest is the test set",
                                            min=0.01, max=0.99)
    n_phantom_nuclei: int = knob("phantom nuclei fields of the set's modality that train the phantom-only HoVer-Net "
                                 "(cpu: 512 fields instead of 128, screened once on MoNuSeg during the H&E rework of "
                                 "2026-12-08, 3 seeds: no gain; not re-screened on the final fields)", min=1)
    mix_fill: list[float] = knob("glomerulus diameter / patch side of the phantom patches that the crops check "
                                 "(histolib.studies.transfer.phantom_and_real) adds to, or puts in place of, the real "
                                 "crops: as tight as the crops [min, max]", min=0.1, max=1.0, length=2)


@section("protocol")
class ProtocolParams:
    """The evaluation protocol every paper notebook shares (DESIGN.md section 6; ``histolib.report``)."""

    n_gan_seeds: int = knob("generator replicates per synthetic-data configuration, crossed with the "
                            "segmentation seeds (issue 'Evidence that holds': >= 2 at cpu, 3 at paper)", min=1)
    alpha: float = knob("significance level of every claim's test", min=0.001, max=0.5)
    faithfulness_gate: float = knob("a generator whose faithfulness is below this fraction of its segmenter's "
                                    "real-image score makes the claims resting on it 'untestable here'",
                                    min=0.0, max=1.0)
