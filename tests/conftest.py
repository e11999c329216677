import numpy as np
import pytest
from skimage.transform import rotate


def glyph(size: int = 16) -> np.ndarray:
    """An asymmetric 'F'-like shape, so every rotation is distinguishable."""
    g = np.zeros((size, size), np.float32)
    s = size / 16
    g[int(3 * s) : int(13 * s), int(6 * s) : int(8 * s)] = 1
    g[int(3 * s) : int(5 * s), int(6 * s) : int(12 * s)] = 1
    g[int(7 * s) : int(9 * s), int(6 * s) : int(10 * s)] = 1
    return g


def rotated_glyphs(n: int, size: int = 16, max_angle: float = 60.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    angles = rng.uniform(-max_angle, max_angle, n)
    base = glyph(size)
    return np.stack([rotate(base, a, order=1) for a in angles]).astype(np.float32), angles


@pytest.fixture(scope="session")
def glyph_stack():
    """300 rotated copies (±60°) of one 16 px shape, with their true angles."""
    return rotated_glyphs(300)
