"""LPIPS from cached trunk features: one backbone pass per image, all pairs combined afterwards.

``lpips.LPIPS(x, y)`` runs the trunk on both images of every pair, N(N-1) passes for a gallery.
The distance is a weighted sum over layers l, channels c and positions p of
``w_lc * s_lp * (f_ilcp - f_jlcp)^2`` with unit-normalised features f, the layer's linear-head
weights w and spatial weights s (uniform = spatial average). Expanding the square turns the
N x N matrix into Gram matrices of features that are computed once per image, so we write this
part ourselves; trunk, heads and normalisation are the ``lpips`` package's own modules.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from couplednoise.eval.metrics.checks import (
    check_images,
    check_mask,
    check_reduction,
    check_reference,
    upper_pairs_mean,
)

# Columns of the flattened features processed at once for the float64 Gram products.
_GRAM_CHUNK = 1 << 16


def _check_net(net: object) -> None:
    import lpips

    if not isinstance(net, lpips.LPIPS):
        raise TypeError(
            f"net must be an lpips.LPIPS instance (see eval.load_lpips), got {type(net).__name__}"
        )


@torch.no_grad()
def lpips_features(images: torch.Tensor, net, *, batch_size: int = 16) -> list[torch.Tensor]:
    """Unit-normalised trunk features of ``net`` for images [N, 3, H, W] in [0, 1].

    Returns one tensor [N, C_l, h_l, w_l] per layer, on the net's device and dtype; the trunk
    runs once per image, ``batch_size`` images at a time.
    """
    import lpips

    _check_net(net)
    check_images(images)
    param = next(net.parameters())
    per_layer: list[list[torch.Tensor]] = [[] for _ in range(net.L)]
    for start in range(0, images.shape[0], batch_size):
        x = images[start : start + batch_size].to(param.device, param.dtype) * 2 - 1
        if net.version == "0.1":
            x = net.scaling_layer(x)
        for layer, out in enumerate(net.net(x)):
            per_layer[layer].append(lpips.normalize_tensor(out))
    return [torch.cat(chunks) for chunks in per_layer]


def _channel_weights(net, layer: int, channels: int, like: torch.Tensor) -> torch.Tensor:
    """The linear head's 1x1-conv weights [C] of ``layer`` (ones for the baseline lpips=False)."""
    if net.lpips:
        return net.lins[layer].model[-1].weight.reshape(-1).to(like.device, torch.float64)
    return torch.ones(channels, device=like.device, dtype=torch.float64)


def _spatial_weights(mask: torch.Tensor | None, height: int, width: int) -> torch.Tensor:
    """Weights [M, h, w] over a layer's grid whose weighted sum is the LPIPS mean.

    Without a mask: uniform 1 / (h w), the spatial average of ``lpips.LPIPS``. With a pixel mask
    [M, 1, H, W]: the adjoint of the bilinear upsampling of ``LPIPS(spatial=True)`` applied to
    the mask, over the mask's area, so that the sum equals the spatial LPIPS map averaged in the mask.
    """
    if mask is None:
        return torch.full((1, height, width), 1.0 / (height * width), dtype=torch.float64)

    def upsample(grid: torch.Tensor) -> torch.Tensor:
        return F.interpolate(grid, size=mask.shape[-2:], mode="bilinear", align_corners=False)

    grid = torch.zeros(mask.shape[0], 1, height, width, dtype=torch.float64, device=mask.device)
    _, adjoint = torch.func.vjp(upsample, grid)
    (weights,) = adjoint(mask.double())
    return weights[:, 0] / mask.double().sum(dim=(1, 2, 3))[:, None, None]


def _gram(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b.T in float64 for a [n, D], b [m, D], in column chunks to bound memory."""
    out = torch.zeros(a.shape[0], b.shape[0], dtype=torch.float64, device=a.device)
    for start in range(0, a.shape[1], _GRAM_CHUNK):
        stop = start + _GRAM_CHUNK
        out += a[:, start:stop].double() @ b[:, start:stop].double().T
    return out


@torch.no_grad()
def lpips_matrix_from_features(
    features: list[torch.Tensor], net, *, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """N x N LPIPS matrix (float64, zero diagonal) from ``lpips_features`` output.

    ``mask`` [1, 1, H, W] (pixel space, float {0,1}) averages the spatial LPIPS map in the mask.
    """
    n = features[0].shape[0]
    total = torch.zeros(n, n, dtype=torch.float64, device=features[0].device)
    for layer, feats in enumerate(features):
        channels, height, width = feats.shape[1:]
        spatial = _spatial_weights(mask, height, width).to(feats.device)[0]
        weights = _channel_weights(net, layer, channels, feats)[:, None, None] * spatial
        flat = feats.reshape(n, -1)
        weighted = (feats.double() * weights).reshape(n, -1)
        gram = _gram(flat, weighted)
        norms = gram.diagonal()
        total += norms[:, None] + norms[None, :] - 2 * gram
    return total.fill_diagonal_(0)


@torch.no_grad()
def pairwise_lpips(
    images: torch.Tensor,
    net,
    *,
    mask: torch.Tensor | None = None,
    reduction: str = "mean",
    batch_size: int = 16,
) -> torch.Tensor:
    """LPIPS between every pair of images [N, 3, H, W] in [0, 1] (``net`` an ``lpips.LPIPS``).

    Equals ``net(images[i], images[j], normalize=True)`` for every pair, with one trunk pass per
    image (memory O(N) in images). ``mask`` [H, W] (1 = region, e.g. background) averages the
    spatial LPIPS map (``lpips.LPIPS(spatial=True)``) in that region instead. Returns the mean
    over pairs (scalar) or the N x N matrix with ``reduction="none"``, in ``images.dtype``.
    """
    check_reduction(reduction)
    _check_net(net)
    check_images(images, min_count=2)
    pixel_mask = None
    if mask is not None:
        pixel_mask = check_mask(mask, *images.shape[-2:], count=1)
    features = lpips_features(images, net, batch_size=batch_size)
    if pixel_mask is not None:
        pixel_mask = pixel_mask.to(features[0].device)
    matrix = lpips_matrix_from_features(features, net, mask=pixel_mask)
    matrix = matrix.to(images.device, images.dtype)
    return upper_pairs_mean(matrix) if reduction == "mean" else matrix


@torch.no_grad()
def masked_lpips(
    images: torch.Tensor,
    reference: torch.Tensor,
    mask: torch.Tensor,
    net,
    *,
    reduction: str = "mean",
    batch_size: int = 16,
) -> torch.Tensor:
    """Spatial LPIPS between each image and ``reference``, averaged inside ``mask``.

    images [N, 3, H, W], reference [3, H, W] or [N, 3, H, W], both in [0, 1]; mask [H, W] or
    [N, 1, H, W] in {0, 1} (1 = region to compare, e.g. the object). Equals
    ``lpips.LPIPS(spatial=True)(image, reference, normalize=True)`` averaged over the mask's
    pixels; an empty mask is an error. Returns the mean over images or [N] with ``reduction="none"``.
    """
    check_reduction(reduction)
    _check_net(net)
    reference = check_reference(images, reference)
    pixel_mask = check_mask(mask, *images.shape[-2:], count=images.shape[0])
    features = lpips_features(images, net, batch_size=batch_size)
    reference_features = lpips_features(reference, net, batch_size=batch_size)
    pixel_mask = pixel_mask.to(features[0].device)
    total = torch.zeros(images.shape[0], dtype=torch.float64, device=features[0].device)
    for layer, (feats, ref) in enumerate(zip(features, reference_features)):
        channels, height, width = feats.shape[1:]
        spatial = _spatial_weights(pixel_mask, height, width)
        weights = _channel_weights(net, layer, channels, feats)[None, :, None, None]
        distance_map = ((feats.double() - ref.double()) ** 2 * weights).sum(1)
        total += (distance_map * spatial).sum(dim=(1, 2))
    values = total.to(images.device, images.dtype)
    return values.mean() if reduction == "mean" else values
