"""Sample data for napari's File > Open Sample menu. Nothing here touches the network."""

from __future__ import annotations

import numpy as np

from napari_rvae.core.real_data import REAL_SAMPLE_CREDIT, real_sample_path
from napari_rvae.core.stm_sample import STM_SAMPLE_CREDIT, STM_SAMPLE_SOURCE, STM_Z_UNIT, stm_sample_image
from napari_rvae.core.synthetic import make_lattice, make_rotated_digits

LATTICE_POINTS_NAME = "lattice points (ground truth)"
STM_SAMPLE_NAME = "STM step edge and atoms (SPIEPy)"


def lattice_sample():
    """A synthetic 512 x 512 polycrystal (three grains at 0°, 30°, -55°) plus its true atom positions."""
    lat = make_lattice(seed=0)
    scale = (lat.pixel_size, lat.pixel_size)
    units = (lat.unit, lat.unit)
    image_meta = {
        "unit": lat.unit,
        "pixel_size": lat.pixel_size,
        "source": "napari_rvae.core.synthetic.make_lattice(seed=0)",
        "grains": [list(g) for g in lat.grains],
        "spacing_px": lat.spacing,
    }
    features = {
        "angle_true": lat.angle_deg.astype(np.float64),
        "grain": lat.grain.astype(int),
        "species": lat.species.astype(int),
    }
    return [
        (lat.image, {"name": "synthetic lattice", "scale": scale, "units": units, "metadata": image_meta}, "image"),
        (
            lat.points,
            {
                "name": LATTICE_POINTS_NAME,
                "scale": scale,
                "units": units,
                "features": features,
                "size": 3,
                "face_color": "red",
                "border_width": 0,
                "visible": True,
                "metadata": {"unit": lat.unit, "pixel_size": lat.pixel_size},
            },
            "points",
        ),
    ]


def digits_sample():
    """2000 handwritten digits (28 x 28) rotated uniformly in [-180°, 180°], as an image stack."""
    patches, angles, digits = make_rotated_digits(n=2000, size=28, max_angle=180, seed=0)
    meta = {
        "angle_true": angles,
        "digit": digits,
        "source": "sklearn.datasets.load_digits, rotated with skimage.transform.rotate (CCW as displayed)",
    }
    return [(patches, {"name": "rotated digits", "metadata": meta, "colormap": "gray"}, "image")]


def real_sample():
    """A real HAADF-STEM image (Se-implanted MoS2), read from the user's temul-toolkit install."""
    from napari_rvae.core.readers import read_image_file

    from .reader import layer_data_tuple

    data, kwargs, kind = layer_data_tuple(read_image_file(real_sample_path())[0])
    kwargs = {
        **kwargs,
        "name": "MoS2 STEM (temul-toolkit)",
        "metadata": {**kwargs.get("metadata", {}), "credit": REAL_SAMPLE_CREDIT},
    }
    return [(data, kwargs, kind)]


def stm_sample():
    """A real STM topograph (SPIEPy's demo, BSD-2-Clause), bundled with napari-rvae: no extra install."""
    meta = {"credit": STM_SAMPLE_CREDIT, "source": STM_SAMPLE_SOURCE, "z_unit": STM_Z_UNIT}
    return [(stm_sample_image(), {"name": STM_SAMPLE_NAME, "colormap": "afmhot", "metadata": meta}, "image")]


__all__ = ["lattice_sample", "digits_sample", "real_sample", "stm_sample", "LATTICE_POINTS_NAME", "STM_SAMPLE_NAME"]
