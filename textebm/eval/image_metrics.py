"""Image metrics and pictures: Fréchet distance / FID, reconstruction MSE, image grids saved as PNG.

Images are float tensors ``(N, C, H, W)`` in ``[-1, 1]`` with C = 1 (grayscale) or 3 (RGB). FID uses the
standard TorchScript FID Inception-v3 (``inception-2015-12-05.pt``), read from a file the user provides:
nothing is downloaded. ``PIL`` is imported only to write PNGs.
"""
from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Callable, Optional, Tuple, Union

import numpy as np
import torch

from ..extras import require
from ..files import atomic_write

INCEPTION_FILE = "inception-2015-12-05.pt"
INCEPTION_URL = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt"


class ImageMetricError(ValueError):
    """Inputs to an image metric that do not fit (shapes, values); the message says which and why."""


class InceptionWeightsNotFound(FileNotFoundError):
    """The FID Inception TorchScript file is missing; the message says what to get and how to pass it."""


def _float64(a, what: str) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().double().numpy()
    a = np.asarray(a, dtype=np.float64)
    if not np.isfinite(a).all():
        raise ImageMetricError(f"{what} contains NaN or inf")
    return a


def _sqrtm_psd(s: np.ndarray) -> np.ndarray:
    """Symmetric PSD square root V diag(sqrt(max(w, 0))) V^T of the symmetrized matrix."""
    w, v = np.linalg.eigh((s + s.T) / 2.0)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Squared Fréchet (2-Wasserstein) distance between N(mu1, S1) and N(mu2, S2).

    d^2 = |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1^{1/2} S2 S1^{1/2})^{1/2}), in float64. Both square roots come
    from symmetric eigendecompositions with tiny negative eigenvalues (round-off) clipped to 0, so the result
    is real; it is clipped at 0. Accepts numpy arrays or torch tensors; mu: (D,), sigma: (D, D).
    """
    mu1, mu2 = _float64(mu1, "mu1").reshape(-1), _float64(mu2, "mu2").reshape(-1)
    s1, s2 = _float64(sigma1, "sigma1"), _float64(sigma2, "sigma2")
    d = mu1.shape[0]
    if mu2.shape != (d,):
        raise ImageMetricError(f"mu1 and mu2 must have the same length, got {mu1.shape[0]} and {mu2.shape[0]}")
    for name, s in (("sigma1", s1), ("sigma2", s2)):
        if s.shape != (d, d):
            raise ImageMetricError(f"{name} must be ({d}, {d}) to match the means, got shape {tuple(s.shape)}")
    r1 = _sqrtm_psd(s1)
    m = r1 @ s2 @ r1
    eig = np.linalg.eigvalsh((m + m.T) / 2.0)
    tr_covmean = float(np.sqrt(np.clip(eig, 0.0, None)).sum())
    diff = mu1 - mu2
    d2 = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)
    return max(d2, 0.0)


def feature_statistics(features) -> Tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance of (N, D) features: mu = mean_i f_i, S = sum_i (f_i - mu)(f_i - mu)^T / (N - 1)."""
    f = _float64(features, "features")
    if f.ndim != 2:
        raise ImageMetricError(f"features must be a 2-d (N, D) array, got shape {tuple(f.shape)}")
    if f.shape[0] < 2:
        raise ImageMetricError(f"need at least 2 feature rows for a covariance, got {f.shape[0]}")
    return f.mean(axis=0), np.atleast_2d(np.cov(f, rowvar=False, ddof=1))


class InceptionFeatures(torch.nn.Module):
    """The standard FID Inception-v3 pool features (2048-d) from the TorchScript file ``inception-2015-12-05.pt``.

    That file (the TorchScript export of the TF FID Inception used by StyleGAN2-ADA and clean-fid) is called
    as ``model(uint8 NCHW RGB, return_features=True)`` and resizes internally. ``forward`` maps images in
    [-1, 1] to uint8 by ``round((x + 1) * 127.5)`` (clamped to 0..255), repeats grayscale to 3 channels,
    and returns float32 ``(N, 2048)`` features. No download is ever attempted.
    """

    def __init__(self, path):
        super().__init__()
        p = Path(path).expanduser() if path else None
        if p is not None and p.is_dir():
            p = p / INCEPTION_FILE
        if p is None or not p.is_file():
            raise InceptionWeightsNotFound(
                f"FID Inception weights not found: {p if p is not None else '(no path given)'}. FID needs the "
                f"TorchScript file {INCEPTION_FILE} (no download is attempted); it is usually taken from NVIDIA's "
                f"StyleGAN2-ADA metrics release ({INCEPTION_URL}). Pass it with "
                f"`textebm eval RUN --inception PATH` or InceptionFeatures(PATH)")
        try:
            with warnings.catch_warnings():  # torch >= 2.10 deprecates TorchScript; the file is TorchScript
                warnings.simplefilter("ignore", DeprecationWarning)
                self.model = torch.jit.load(str(p), map_location="cpu")
        except Exception as e:
            raise ImageMetricError(f"cannot load {p} as a TorchScript model ({type(e).__name__}: {e}); "
                                   f"it should be {INCEPTION_FILE}") from None
        self.model.eval()
        self.path = str(p)

    @staticmethod
    def to_uint8(x: torch.Tensor) -> torch.Tensor:
        """[-1, 1] floats (N, C, H, W), C in {1, 3} -> uint8 (N, 3, H, W) RGB: round((x + 1) * 127.5)."""
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise ImageMetricError(f"InceptionFeatures needs (N, C, H, W) images with C = 1 or 3, "
                                   f"got shape {tuple(x.shape)}")
        u = ((x.float().clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)
        return u.repeat(1, 3, 1, 1) if u.shape[1] == 1 else u

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) in [-1, 1] -> (N, 2048) float32 Inception pool features."""
        return self.model(self.to_uint8(x), return_features=True).float()


def extract_features(extractor: Callable[[torch.Tensor], torch.Tensor], images, batch_size: int = 100,
                     device: Union[str, torch.device] = "cpu") -> np.ndarray:
    """Features f(x_i) of every image, (N, D) float64; outputs of higher rank are flattened per image.

    ``extractor`` maps a (B, C, H, W) batch in [-1, 1] to (B, ...); a torch module is run in eval mode (its
    training flag is restored afterwards) under ``torch.no_grad``.
    """
    x = images if isinstance(images, torch.Tensor) else torch.as_tensor(np.asarray(images))
    if x.ndim != 4 or len(x) == 0:
        raise ImageMetricError(f"images must be a non-empty (N, C, H, W) tensor, got shape {tuple(x.shape)}")
    if batch_size < 1:
        raise ImageMetricError(f"batch_size must be >= 1, got {batch_size}")
    was_training = isinstance(extractor, torch.nn.Module) and extractor.training
    if was_training:
        extractor.eval()
    out = []
    try:
        with torch.no_grad():
            for i in range(0, len(x), batch_size):
                f = extractor(x[i:i + batch_size].to(device=device, dtype=torch.float32))
                f = torch.as_tensor(f)
                out.append(f.reshape(f.shape[0], -1).detach().cpu().double().numpy())
    finally:
        if was_training:
            extractor.train()
    return np.concatenate(out, axis=0)


def fid(real, fake, extractor: Callable[[torch.Tensor], torch.Tensor], batch_size: int = 100,
        device: Union[str, torch.device] = "cpu") -> float:
    """Fréchet distance between the feature Gaussians of two image sets.

    FID = |mu_r - mu_f|^2 + tr(S_r + S_f - 2 (S_r^{1/2} S_f S_r^{1/2})^{1/2}) with (mu, S) the mean and unbiased
    covariance of ``extractor`` features (the Inception pool features for the standard FID).
    """
    mu_r, s_r = feature_statistics(extract_features(extractor, real, batch_size, device))
    mu_f, s_f = feature_statistics(extract_features(extractor, fake, batch_size, device))
    return frechet_distance(mu_r, s_r, mu_f, s_f)


def mse(x, x_hat) -> float:
    """Mean squared error per pixel on the [-1, 1] scale: (1 / (N C H W)) sum (x - x_hat)^2."""
    a = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    b = x_hat if isinstance(x_hat, torch.Tensor) else torch.as_tensor(np.asarray(x_hat))
    if a.shape != b.shape:
        raise ImageMetricError(f"mse: x has shape {tuple(a.shape)} but x_hat has {tuple(b.shape)}; they must match")
    if a.numel() == 0:
        raise ImageMetricError("mse: empty input")
    return float((a.detach().double().cpu() - b.detach().double().cpu()).pow(2).mean())


def make_grid(images, nrow: Optional[int] = None, padding: int = 2, pad_value: float = 1.0) -> np.ndarray:
    """Tile (N, C, H, W) images in [-1, 1] into one uint8 array (rows * (H + p) + p, nrow * (W + p) + p, C).

    ``nrow`` images per row (default ceil(sqrt(N))), rows = ceil(N / nrow); ``padding`` pixels between and
    around the tiles filled with ``pad_value`` (on the [-1, 1] scale; 1.0 = white). Pixels map to uint8 by
    round((clamp(x, -1, 1) + 1) * 127.5); NaN becomes 0 (mid gray), +-inf becomes +-1.
    """
    x = images if isinstance(images, torch.Tensor) else torch.as_tensor(np.asarray(images))
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[1] not in (1, 3) or len(x) == 0:
        raise ImageMetricError(f"make_grid needs non-empty (N, C, H, W) images with C = 1 or 3, "
                               f"got shape {tuple(x.shape)}")
    if padding < 0:
        raise ImageMetricError(f"padding must be >= 0, got {padding}")
    n, c, h, w = x.shape
    nrow = int(math.ceil(math.sqrt(n))) if nrow is None else int(nrow)
    if nrow < 1:
        raise ImageMetricError(f"nrow must be >= 1, got {nrow}")
    ncol, rows = min(nrow, n), int(math.ceil(n / nrow))
    x = torch.nan_to_num(x.detach().cpu().float(), nan=0.0, posinf=1.0, neginf=-1.0)
    tiles = ((x.clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    fill = int(round((min(max(float(pad_value), -1.0), 1.0) + 1.0) * 127.5))
    grid = np.full((rows * (h + padding) + padding, ncol * (w + padding) + padding, c), fill, dtype=np.uint8)
    for k in range(n):
        r, q = divmod(k, nrow)
        top, left = padding + r * (h + padding), padding + q * (w + padding)
        grid[top:top + h, left:left + w] = tiles[k]
    return grid


def save_image_grid(images, path, nrow: Optional[int] = None, padding: int = 2, pad_value: float = 1.0) -> Path:
    """Write :func:`make_grid` of ``images`` as one PNG (grayscale for C = 1, RGB for C = 3), atomically.

    Parent directories are created; the PNG is written to a temporary file beside ``path`` and moved into
    place with ``os.replace``. Returns the path.
    """
    Image = require("PIL.Image", "writing PNG grids", "images")
    grid = make_grid(images, nrow=nrow, padding=padding, pad_value=pad_value)
    img = Image.fromarray(np.ascontiguousarray(grid[:, :, 0]) if grid.shape[2] == 1 else grid)  # L or RGB
    return atomic_write(path, lambda tmp: img.save(tmp, format="PNG"))
