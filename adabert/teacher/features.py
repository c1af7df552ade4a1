"""Teacher sentence vectors as regression targets for the student (sentence-vector KD).

A binary task's logits give the student one number per sentence to imitate; the teacher's sentence vector at
each layer (the probes' inputs: [CLS] state, or the embedding mean at layer 0) gives it D. Each layer's vectors
are standardised and expressed in their principal components, the top r of them (r = D keeps everything, the
measured choice; a smaller r, a smaller cache), each scaled to unit mean square as a standardised dimension has:

    z_l = (v_l - mean_l) / std_l                 mean_l, std_l [D] over the fit rows
    c_l = z_l @ B_l,  B_l = V_l sqrt(r / sum(lambda_l))   V_l [D, r]: top r eigenvectors of the covariance of
                                                         z_l (eigenvalues lambda_l), so mean over fit rows of
                                                         ||c_l||^2 / r = 1
With r = D, c_l is z_l rotated: the loss (`losses.feature_kd`) is then the mean squared error of the standardised
vectors themselves.
Targets c [N, L+1, r] are stored as float16 by `adabert probes` (train split) and `adabert augment` (new text);
the maps (mean, std, B) [L+1, D] / [L+1, D, r] sit beside the probe weights in probes.safetensors.
"""

from __future__ import annotations

import torch

FEATURE_KEYS = ("feature_mean", "feature_std", "feature_basis")


def fit_feature_maps(vecs: torch.Tensor, dims: int, chunk: int = 8192) -> dict[str, torch.Tensor]:
    """The maps above (float32) from sentence vectors [N, L+1, D] (any float dtype; the fit rows only), summed in
    float64 over chunks of rows (the vectors of a large task do not fit in memory twice in a wider type)."""
    n, layers, width = vecs.shape
    dims = min(dims, width)
    total = torch.zeros(layers, width, dtype=torch.float64)
    sq = torch.zeros(layers, width, dtype=torch.float64)
    for i in range(0, n, chunk):
        v = vecs[i:i + chunk].double()
        total += v.sum(0)
        sq += (v * v).sum(0)
    mean = total / n
    std = (sq / n - mean ** 2).clamp_min(0).sqrt().clamp_min(1e-4)
    cov = torch.zeros(layers, width, width, dtype=torch.float64)
    for i in range(0, n, chunk):
        z = (vecs[i:i + chunk].double() - mean) / std
        cov += torch.einsum("nld,nle->lde", z, z)
    evals, evecs = torch.linalg.eigh(cov / n)  # ascending order
    kept = evals[:, -dims:].clamp_min(0).sum(-1).clamp_min(1e-12)
    basis = evecs[:, :, -dims:].flip(-1) * (dims / kept).sqrt()[:, None, None]
    return {"feature_mean": mean.float(), "feature_std": std.float(), "feature_basis": basis.float()}


def feature_targets(vecs: torch.Tensor, maps: dict[str, torch.Tensor]) -> torch.Tensor:
    """Targets c [B, L+1, r] (float16) of sentence vectors [B, L+1, D]."""
    z = (vecs.float() - maps["feature_mean"]) / maps["feature_std"]
    return torch.einsum("bld,ldr->blr", z, maps["feature_basis"]).half()


def has_feature_maps(tensors: dict[str, torch.Tensor]) -> bool:
    return all(k in tensors for k in FEATURE_KEYS)
