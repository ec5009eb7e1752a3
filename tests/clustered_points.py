"""Points around known centres, for the tests of clustering and quantization."""
import numpy as np


def blobs(n_per, centres, noise, seed=0):
    """Points around `centres` (C, d): (n_per * C, d) points and their (n_per * C,) labels."""
    rng = np.random.default_rng(seed)
    centres = np.asarray(centres, np.float64)
    labels = np.repeat(np.arange(len(centres)), n_per)
    return centres[labels] + noise * rng.normal(size=(len(labels), centres.shape[1])), labels
