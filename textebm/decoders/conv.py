"""Conv generator decoder p_beta(x | z) over images, with a Gaussian likelihood (Pang et al. 2020, Table 6).

    g_beta(z): z (batch, d) -> 4x4 transposed conv -> [x2 upsampling transposed convs] -> tanh, (batch, C, H, W)
    log p_beta(x | z) = log N(x; g_beta(z), sigma^2 I)
                      = -|x - g_beta(z)|^2 / (2 sigma^2) - (D / 2) log(2 pi sigma^2),   D = C * H * W,
summed over the pixels of each image (sigma = 0.3 in the paper). Images are scaled to [-1, 1].

The layers follow the paper's Table 6: a 4x4 transposed convolution (stride 1) from z to ngf*8 channels, then
4x4 stride-2 transposed convolutions that double the resolution and halve the channels (ngf*8 -> ngf*4 -> ...),
LeakyReLU(0.2) between them and tanh at the output. 32x32 images (SVHN, CIFAR-10) get 4 layers, 64x64 (CelebA)
get 5; any size 4 * 2^k works.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from .base import register_decoder, check_latent


def _upsampling_stages(image_size: int) -> int:
    k = math.log2(image_size / 4) if image_size >= 8 else -1
    if k < 1 or not float(k).is_integer():
        raise ValueError(f"ConvDecoder: image_size must be 4 * 2^k with k >= 1 (8, 16, 32, 64, 128, ...); got "
                         f"{image_size}. Set data.image_size to one of these (images are resized on loading)")
    return int(k)


@register_decoder("conv", modality="image")
class ConvDecoder(nn.Module):
    """DCGAN-style generator with a Gaussian pixel likelihood.

    Args:
        latent_dim: size of z (paper: SVHN 100, CIFAR-10 128, CelebA 100).
        channels: image channels (3 for colour, 1 for grey).
        image_size: height = width, 4 * 2^k.
        ngf: base width (paper: SVHN 64, CIFAR-10 128, CelebA 128).
        sigma: standard deviation of the Gaussian likelihood (paper: 0.3).
        negative_slope: LeakyReLU slope between layers (paper's code: 0.2).
    """

    def __init__(self, latent_dim: int, channels: int = 3, image_size: int = 32, ngf: int = 64,
                 sigma: float = 0.3, negative_slope: float = 0.2):
        super().__init__()
        if not sigma > 0:
            raise ValueError(f"ConvDecoder: sigma must be > 0, got {sigma}")
        if channels < 1 or ngf < 1 or latent_dim < 1:
            raise ValueError(f"ConvDecoder: latent_dim, channels and ngf must be >= 1 "
                             f"(got {latent_dim}, {channels}, {ngf})")
        self.latent_dim, self.channels, self.image_size = int(latent_dim), int(channels), int(image_size)
        self.sigma = float(sigma)
        self.config = dict(latent_dim=latent_dim, channels=channels, image_size=image_size, ngf=ngf, sigma=sigma,
                           negative_slope=negative_slope)
        n_up = _upsampling_stages(image_size)
        widths = [max(1, ngf * 8 // 2 ** i) for i in range(n_up)]
        layers = [nn.ConvTranspose2d(latent_dim, widths[0], 4, 1, 0), nn.LeakyReLU(negative_slope)]
        for w_in, w_out in zip(widths[:-1], widths[1:]):
            layers += [nn.ConvTranspose2d(w_in, w_out, 4, 2, 1), nn.LeakyReLU(negative_slope)]
        layers += [nn.ConvTranspose2d(widths[-1], channels, 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def reset_parameters(self) -> None:
        """Re-initialize every layer with PyTorch's default initializer (in place)."""
        for m in self.net:
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()

    @property
    def n_dims(self) -> int:
        return self.channels * self.image_size * self.image_size

    def mean(self, z: torch.Tensor) -> torch.Tensor:
        """g_beta(z): (batch, d) -> (batch, C, H, W) in [-1, 1].

        The first layer, a 4x4 transposed convolution of a 1x1 input, is the linear map
        h[c, i, j] = sum_k z_k W[k, c, i, j] + b[c]; it is computed as one matrix product, which gives the same
        numbers several times faster on CPU than the transposed-convolution kernel.
        """
        check_latent(z, self.latent_dim, who="ConvDecoder")
        first = self.net[0]
        w = first.weight  # (d, C0, 4, 4)
        h = torch.addmm(first.bias.repeat_interleave(16), z, w.reshape(w.shape[0], -1))
        return self.net[1:](h.view(z.shape[0], w.shape[1], 4, 4))

    def check_images(self, x: torch.Tensor) -> None:
        want = (self.channels, self.image_size, self.image_size)
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or tuple(x.shape[1:]) != want:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"ConvDecoder expects images of shape (batch, {want[0]}, {want[1]}, {want[2]}); got "
                             f"{got}. Check data.channels and data.image_size against the model's")
        if not x.is_floating_point():
            raise ValueError(f"ConvDecoder expects float images scaled to [-1, 1]; got dtype {x.dtype}")

    def log_prob(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log N(x; g(z), sigma^2 I) summed over pixels: (batch,)."""
        self.check_images(x)
        check_latent(z, self.latent_dim, x.shape[0], "ConvDecoder")
        return self.log_prob_given_mean(x, self.mean(z))

    def log_prob_given_mean(self, x: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
        """log N(x; mean, sigma^2 I) summed over pixels, for callers that also need g(z) itself."""
        sq = (x - mean).pow(2).flatten(1).sum(1)
        return -0.5 * sq / self.sigma ** 2 - 0.5 * self.n_dims * math.log(2 * math.pi * self.sigma ** 2)

    @torch.no_grad()
    def generate(self, z: torch.Tensor, noise: bool = False, generator: Optional[torch.Generator] = None,
                 **_ignored) -> torch.Tensor:
        """Images for each row of z: the mean g(z) (the usual way to show samples), or a draw with pixel noise."""
        x = self.mean(z)
        if noise:
            x = x + self.sigma * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return x
