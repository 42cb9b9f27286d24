"""How alike two prompt tensors are channel by channel (the paper's Sec. 4.4 claim), and what words they are near.

A prompt tensor is read as rows (its tokens; leading dimensions flattened, e.g. class x token for a
class-specific context) by channels (its last dimension; ``as_rows``). ``compare(P, X)`` gives:

    channel_r    Pearson correlation, over channels, of the channels' magnitudes (RMS over the tokens)
    token_cos    cosine of each token's vector in P and in X: mean and minimum over tokens
    top_shared   share of P's 10% strongest channels (by magnitude) that are also among X's 10% strongest
    along_P      share of the squared norm of X - P that lies along P: (<X - P, P> / |P|)^2 / |X - P|^2
                 (1: X is P rescaled; 0: the change is orthogonal to P; NaN when X = P)

``baselines`` gives the same statistics against random tensors: a random prompt with the norm of P', and
P moved by a random change as large as P' - P (|P' - P|), as the mean and spread over seeded draws.
"""
from __future__ import annotations

import math
from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F

TOP_SHARE = 0.1  # "strongest channels": the top 10% by magnitude
STATS = ("channel_r", "token_cos", "token_cos_min", "top_shared", "along_P")


def as_rows(x: torch.Tensor) -> torch.Tensor:
    """``x`` as a float64 matrix of rows (tokens) by channels (its last dimension, after dropping trailing
    dimensions of size 1: a 1x1 convolution's weight [out, in, 1, 1] has ``in`` channels)."""
    x = x.detach().to(torch.float64)
    while x.dim() > 2 and x.shape[-1] == 1:
        x = x.squeeze(-1)
    return x.reshape(1, -1) if x.dim() < 2 else x.reshape(-1, x.shape[-1])


def channel_magnitudes(x: torch.Tensor) -> torch.Tensor:
    """RMS of each channel over the tokens: [channels]."""
    return as_rows(x).pow(2).mean(0).sqrt()


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    """Pearson correlation of two vectors (NaN when either is constant)."""
    a, b = a - a.mean(), b - b.mean()
    denominator = a.norm() * b.norm()
    return float(a @ b / denominator) if denominator > 0 else math.nan


def top_channels(x: torch.Tensor, share: float = TOP_SHARE) -> set:
    magnitudes = channel_magnitudes(x)
    k = max(1, round(share * magnitudes.numel()))
    return set(magnitudes.topk(k).indices.tolist())


def along(p: torch.Tensor, x: torch.Tensor) -> float:
    """Share of |x - p|^2 that lies along p (NaN when x = p or p = 0)."""
    p, d = as_rows(p).flatten(), (as_rows(x) - as_rows(p)).flatten()
    if d.norm() == 0 or p.norm() == 0:
        return math.nan
    return float((d @ p / p.norm()) ** 2 / d.pow(2).sum())


def compare(p: torch.Tensor, x: torch.Tensor) -> Dict[str, float]:
    """The statistics of ``x`` against the reference prompt ``p`` (same shape)."""
    if p.shape != x.shape:
        raise ValueError(f"cannot compare prompts of shapes {tuple(p.shape)} and {tuple(x.shape)}")
    cos = F.cosine_similarity(as_rows(p), as_rows(x), dim=1)
    top = top_channels(p)
    return {"channel_r": pearson(channel_magnitudes(p), channel_magnitudes(x)),
            "token_cos": float(cos.mean()), "token_cos_min": float(cos.min()),
            "top_shared": len(top & top_channels(x)) / len(top), "along_P": along(p, x)}


def random_like(p: torch.Tensor, norm: float, generator: torch.Generator) -> torch.Tensor:
    """A Gaussian tensor of ``p``'s shape scaled to ``norm``."""
    r = torch.randn(p.shape, generator=generator, dtype=torch.float64)
    return r * (norm / r.norm())


def summarise(rows: Sequence[Dict[str, float]]) -> Dict[str, Tuple[float, float]]:
    """{statistic: (mean, population standard deviation)} over ``rows`` (NaNs left out; (NaN, NaN) when all are),
    the project's mean +- std over seeds (tools/parse_test_res.py)."""
    out = {}
    for key in rows[0]:
        values = torch.tensor([r[key] for r in rows if not math.isnan(r[key])], dtype=torch.float64)
        out[key] = (float(values.mean()), float(values.std(correction=0))) if len(values) else (math.nan, math.nan)
    return out


def baselines(p: torch.Tensor, p_dual: torch.Tensor, draws: int = 100, seed: int = 0) -> Dict[str, Dict]:
    """The statistics against random tensors, {name: {statistic: (mean, std over draws)}}:
    ``random prompt`` (norm |P'|) and ``random move`` (P plus a random change of norm |P' - P|)."""
    generator = torch.Generator().manual_seed(seed)
    p64, dual = as_rows(p).reshape(p.shape), as_rows(p_dual).reshape(p.shape)
    norm, step = float(dual.norm()), float((dual - p64).norm())
    prompts, moves = [], []
    for _ in range(draws):
        prompts.append(compare(p64, random_like(p64, norm, generator)))
        moves.append(compare(p64, p64 + random_like(p64, step, generator)))
    return {"random prompt": summarise(prompts), "random move": summarise(moves)}


def downsample(x: torch.Tensor, max_rows: int = 32, max_columns: int = 64) -> torch.Tensor:
    """Block means (area pooling) of the token x channel map down to at most ``max_rows`` x ``max_columns``."""
    rows = as_rows(x)
    size = (min(rows.shape[0], max_rows), min(rows.shape[1], max_columns))
    return F.adaptive_avg_pool2d(rows[None, None], size)[0, 0]


# ---------------------------------------------------------------- nearest words (CoOp's interpret_prompt)
def token_text(tokenizer, index: int) -> str:
    """A vocabulary entry as text; a word piece (no end-of-word marker) gets a trailing '-'."""
    text = tokenizer.decode([index]).strip()
    return text if tokenizer.decoder[index].endswith("</w>") or text.startswith("<|") else text + "-"


def nearest_words(vectors: torch.Tensor, embedding: torch.Tensor, tokenizer,
                  k: int = 3) -> List[List[Tuple[str, float]]]:
    """For each row of ``vectors``, the ``k`` vocabulary entries whose token embeddings (``embedding``
    [vocabulary, width]) are nearest in Euclidean distance, as (text, distance)."""
    distances = torch.cdist(as_rows(vectors), embedding.detach().to(torch.float64))
    values, indices = distances.topk(k, dim=1, largest=False)
    return [[(token_text(tokenizer, int(i)), float(v)) for v, i in zip(row_v, row_i)]
            for row_v, row_i in zip(values, indices)]
