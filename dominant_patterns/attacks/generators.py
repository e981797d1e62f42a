"""Generator networks of the generative UAP baselines: GAP's ResNet generator and the NAG/AAA generator.

* :class:`ResnetGenerator` (GAP, Poursaeed et al. 2018; the pix2pix-style network of
  OmidPoursaeed/Generative_Adversarial_Perturbations ``material/models/generators.py``): 7x7 conv,
  two stride-2 convs, ``n_blocks`` residual blocks, two stride-2 transposed convs, 7x7 conv, tanh;
  BatchNorm (batch statistics), ReLU, no bias before a norm, no dropout (as ``GAP_clf.py`` builds it).
* :class:`NAGGenerator` (NAG, Mopuri et al. 2018; val-iisc/nag ``new_generator.py``): z ~ U[-1, 1]
  -> linear -> a small square map, then stride-2 transposed convs doubling the side up to the input
  size, each followed by BatchNorm (batch statistics) and ReLU and (``scale_noise``) fresh U[-1, 1]
  noise channels concatenated at every resolution; a last 3x3 conv and ``xi * tanh``.

Both start from :func:`init_weights` (conv/linear weights N(0, 0.02), BatchNorm weight N(1, 0.02),
biases 0: GAP's ``weights_init``, NAG's TF initialisers; NAG's last layer N(0, 0.15)), seeded, so a
fit is reproducible.
"""

from __future__ import annotations

import math

import torch
from torch import nn


@torch.no_grad()
def init_weights(net: nn.Module, generator: torch.Generator) -> None:
    """N(0, 0.02) conv/linear weights, N(1, 0.02) BatchNorm weights, zero biases (drawn from ``generator``);
    a network's ``out`` layer may ask for another spread (``out_std``)."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            m.weight.copy_(torch.randn(m.weight.shape, generator=generator) * 0.02)
            if m.bias is not None:
                m.bias.zero_()
        elif isinstance(m, nn.BatchNorm2d):
            m.weight.copy_(1 + torch.randn(m.weight.shape, generator=generator) * 0.02)
            m.bias.zero_()
    out_std = getattr(net, "out_std", None)
    if out_std is not None:
        net.out.weight.copy_(torch.randn(net.out.weight.shape, generator=generator) * out_std)


def batch_norm(channels: int) -> nn.BatchNorm2d:
    """BatchNorm on the statistics of the batch it is given, in training and when sampling (no running averages)."""
    return nn.BatchNorm2d(channels, track_running_stats=False)


class ResnetBlock(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=False), batch_norm(dim), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=False), batch_norm(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class ResnetGenerator(nn.Module):
    """GAP's image-to-image ResNet generator (3 -> 3 channels, output in [-1, 1] by tanh).

    Inputs whose side is not a multiple of 4 are reflect-padded and the output cropped back. BatchNorm
    uses the statistics of its input batch also when sampling (GAP's input is one fixed image, so this
    is the limit the published eval-mode running averages converge to).
    """

    def __init__(self, ngf: int = 64, n_blocks: int = 6) -> None:
        super().__init__()
        self.ngf, self.n_blocks = int(ngf), int(n_blocks)
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(3, ngf, 7, bias=False), batch_norm(ngf),
                                   nn.ReLU(True)]
        for mult in (1, 2):
            layers += [nn.Conv2d(ngf * mult, ngf * mult * 2, 3, stride=2, padding=1, bias=False),
                       batch_norm(ngf * mult * 2), nn.ReLU(True)]
        layers += [ResnetBlock(ngf * 4) for _ in range(n_blocks)]
        for mult in (4, 2):
            layers += [nn.ConvTranspose2d(ngf * mult, ngf * mult // 2, 3, stride=2, padding=1, output_padding=1,
                                          bias=False),
                       batch_norm(ngf * mult // 2), nn.ReLU(True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, 3, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        side = x.shape[-1]
        pad = (-side) % 4
        if pad:
            x = nn.functional.pad(x, (0, pad, 0, pad), mode="reflect")
        return self.model(x)[..., :side, :side]


def nag_layout(size: int) -> tuple[int, int]:
    """(side of the first map, number of doublings): 7 x 2^5 = 224 as in NAG's 7 -> 224 path, 4 x 2^3 = 32."""
    start = 4 if size < 56 else 7
    return start, max(1, math.ceil(math.log2(size / start)))


class NAGGenerator(nn.Module):
    """z (and per-scale noise) -> a perturbation in [-xi, xi] of side ``size``.

    Channels: ``8 ngf`` at the first map, then ``4, 2, 1, 1, ... x ngf`` after each doubling (the
    released code: 7 ngf at 4x4, then 4, 2, 1, 1, 1, 1 x ngf up to 224). With ``scale_noise`` each
    resolution gets ``ngf, ngf/2, ngf/4, ngf/8, ...`` (at least 1) U[-1, 1] noise channels appended.
    A side the doublings overshoot (e.g. 299) is centre-cropped. The last layer starts at N(0, 0.15)
    (the code's ``out_stddev``), so the first perturbations already span much of [-xi, xi].
    BatchNorm always normalises by the statistics of the batch it is given (no running statistics),
    as the code's "virtual" BN does: it builds every batch of perturbations, also when sampling, as
    its own reference batch. Sample in batches of the training batch size.
    """

    out_std = 0.15

    def __init__(self, size: int, xi: float, *, z_dim: int = 10, ngf: int = 64, scale_noise: bool = True) -> None:
        super().__init__()
        self.size, self.xi, self.z_dim, self.ngf, self.scale_noise = int(size), float(xi), int(z_dim), int(ngf), \
            bool(scale_noise)
        self.start, ups = nag_layout(self.size)
        widths = [8 * ngf] + [max(ngf * 4 // 2 ** i, ngf) for i in range(ups)]
        self.noise_channels = [max(1, ngf >> min(k, 3)) if scale_noise else 0 for k in range(ups + 1)]
        self.project = nn.Linear(self.z_dim, widths[0] * self.start ** 2)
        self.norm0 = batch_norm(widths[0])
        self.ups = nn.ModuleList(
            nn.Sequential(nn.ConvTranspose2d(widths[i] + self.noise_channels[i], widths[i + 1], 4, stride=2,
                                             padding=1, bias=False),
                          batch_norm(widths[i + 1]), nn.ReLU(True))
            for i in range(ups))
        self.out = nn.Conv2d(widths[-1] + self.noise_channels[-1], 3, 3, padding=1)

    def noise_shapes(self, batch: int) -> list[tuple[int, ...]]:
        return [(batch, c, self.start * 2 ** k, self.start * 2 ** k) for k, c in enumerate(self.noise_channels) if c]

    def draw(self, batch: int, generator: torch.Generator, device: torch.device) -> list[torch.Tensor]:
        """The inputs of ``batch`` samples: z, then one noise map per resolution (CPU draws, moved to ``device``)."""
        shapes = [(batch, self.z_dim), *self.noise_shapes(batch)]
        return [(torch.rand(s, generator=generator) * 2 - 1).to(device) for s in shapes]

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        z, noises = inputs[0], list(inputs[1:])
        h = self.project(z).view(z.shape[0], -1, self.start, self.start)
        h = torch.relu(self.norm0(h))
        for k, up in enumerate(self.ups):
            if self.noise_channels[k]:
                h = torch.cat([h, noises.pop(0)], 1)
            h = up(h)
        if self.noise_channels[-1]:
            h = torch.cat([h, noises.pop(0)], 1)
        out = self.xi * torch.tanh(self.out(h))
        top = (out.shape[-1] - self.size) // 2
        return out[..., top:top + self.size, top:top + self.size]
