"""Vectorised torch rendering of the toy world's 32x32 scenes; every random draw comes from one torch.Generator.

Two domains:
- pretraining: one object on a plain gray background, random position, size and colour shade;
- downstream: the same object (a bit larger) with a smaller distractor object, clutter lines behind them
  and pixel noise.

Scenes are drawn at SUPERSAMPLE x the resolution and averaged down (anti-aliased edges), then quantised
to 8 bits, so in-memory images equal the PNG files written from them.
"""
from __future__ import annotations

import math
from contextlib import contextmanager

import torch
import torch.nn.functional as F

from .vocab import COLOURS, SHAPES, UNNAMED_COLOURS

IMAGE_SIZE = 32
SUPERSAMPLE = 2
BACKGROUND_GRAY = (0.3, 0.7)  # plain background level
COLOUR_JITTER = 0.06  # per-channel shade change of an object's colour
PRETRAIN_RADIUS = (5.0, 12.0)  # object half-size in pixels
MAIN_RADIUS = (7.0, 12.0)  # downstream: the object that names the class
DISTRACTOR_RADIUS = (3.5, 5.5)  # downstream: a smaller object of another class
CLUTTER_LINES = 2  # downstream: thin lines of random colours behind the objects
LINE_HALF_WIDTH = 0.6  # pixels
NOISE_STD = 0.05  # downstream: Gaussian pixel noise (images in [0, 1])

# colour index -> RGB: the 10 named colours, then the unnamed ones (indices 10..19, pretraining only)
PALETTE = torch.tensor([rgb for _, rgb in COLOURS] + list(UNNAMED_COLOURS))


# Shapes in object coordinates (u right, v down, about [-1, 1]^2); each returns an inside mask.
def _circle(u, v):
    return u * u + v * v <= 1.0


def _square(u, v):
    return torch.maximum(u.abs(), v.abs()) <= 0.82


def _triangle(u, v):  # apex up
    return (v >= -0.95) & (v <= 0.8) & (u.abs() <= (v + 0.95) / 1.75)


def _cross(u, v):  # a plus sign
    return ((u.abs() <= 0.3) & (v.abs() <= 1.0)) | ((v.abs() <= 0.3) & (u.abs() <= 1.0))


def _star(u, v):  # five points, one up
    radius, angle = torch.sqrt(u * u + v * v), torch.atan2(v, u)
    spikes = ((torch.cos(5 * (angle + math.pi / 2)) + 1) / 2) ** 3
    return radius <= 0.42 + 0.58 * spikes


def _ring(u, v):
    r2 = u * u + v * v
    return (r2 <= 1.0) & (r2 >= 0.55 ** 2)


def _diamond(u, v):
    return u.abs() + v.abs() <= 1.0


def _heart(u, v):  # (x^2 + y^2 - 1)^3 <= x^2 y^3, y up
    x, y = 1.2 * u, 0.12 - 1.2 * v
    return (x * x + y * y - 1) ** 3 <= x * x * y ** 3


def _line(u, v):  # a horizontal bar
    return (v.abs() <= 0.22) & (u.abs() <= 1.0)


def _moon(u, v):  # a crescent opening to the right (mirrored at random)
    return (u * u + v * v <= 1.0) & ((u - 0.45) ** 2 + (v + 0.1) ** 2 > 0.78 ** 2)


SHAPE_MASKS = {"circle": _circle, "square": _square, "triangle": _triangle, "cross": _cross, "star": _star,
               "ring": _ring, "diamond": _diamond, "heart": _heart, "line": _line, "moon": _moon}
assert tuple(SHAPE_MASKS) == SHAPES


@contextmanager
def single_thread():
    """Run torch on one thread: these small ops are ~10x slower when threads compete with other work."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _grid():
    """Sub-pixel centres in pixel units, [S] with S = IMAGE_SIZE * SUPERSAMPLE."""
    return (torch.arange(IMAGE_SIZE * SUPERSAMPLE, dtype=torch.float32) + 0.5) / SUPERSAMPLE


def _uniform(generator, n, low, high):
    return low + (high - low) * torch.rand(n, generator=generator)


def _centres(generator, radius):
    """Object centres [n, 2] (x, y) so that the object stays inside the image."""
    room = IMAGE_SIZE - 2 * radius
    return radius[:, None] + room[:, None] * torch.rand(len(radius), 2, generator=generator)


def _object_colours(generator, colours):
    shade = COLOUR_JITTER * (2 * torch.rand(len(colours), 3, generator=generator) - 1)
    return (PALETTE[colours] + shade).clamp(0, 1)


def shape_mask(shapes, centres, radius, mirror):
    """Inside masks [n, S, S] of objects: shape index, centre (x, y) and half-size in pixels, mirrored or not."""
    grid = _grid()
    sign = 1.0 - 2.0 * mirror.float()
    u = (grid[None, None, :] - centres[:, 0, None, None]) / radius[:, None, None] * sign[:, None, None]
    v = (grid[None, :, None] - centres[:, 1, None, None]) / radius[:, None, None]
    u, v = u.expand(-1, len(grid), -1), v.expand(-1, -1, len(grid))
    mask = torch.zeros(u.shape, dtype=torch.bool)
    for index, draw in enumerate(SHAPE_MASKS.values()):
        rows = shapes == index
        if rows.any():
            mask[rows] = draw(u[rows], v[rows])
    return mask


def line_mask(ends):
    """Masks [n, S, S] of segments ends [n, 4] (x0, y0, x1, y1) in pixels, LINE_HALF_WIDTH wide."""
    grid = _grid()
    px, py = grid[None, None, :], grid[None, :, None]
    x0, y0, x1, y1 = (ends[:, i, None, None] for i in range(4))
    dx, dy = x1 - x0, y1 - y0
    t = (((px - x0) * dx + (py - y0) * dy) / (dx * dx + dy * dy).clamp_min(1e-6)).clamp(0, 1)
    return (px - x0 - t * dx) ** 2 + (py - y0 - t * dy) ** 2 <= LINE_HALF_WIDTH ** 2


def _paint(canvas, mask, rgb):
    """Cover ``canvas`` [n, 3, S, S] with colours ``rgb`` [n, 3] where ``mask`` [n, S, S] is set."""
    m = mask[:, None].float()
    canvas.mul_(1 - m).add_(m * rgb[:, :, None, None])


def _background(generator, n):
    size = IMAGE_SIZE * SUPERSAMPLE
    gray = _uniform(generator, n, *BACKGROUND_GRAY)
    return gray[:, None, None, None].expand(n, 3, size, size).clone()


def _finish(canvas):
    """Average down to IMAGE_SIZE and quantise to 8 bits: images [n, 3, 32, 32] in [0, 1]."""
    image = F.avg_pool2d(canvas, SUPERSAMPLE)
    return to_uint8(image).float() / 255


def to_uint8(images):
    """Images [n, 3, H, W] in [0, 1] -> uint8 [n, 3, H, W]."""
    return (images.clamp(0, 1) * 255).round().to(torch.uint8)


def _draw_object(generator, canvas, pairs, radius_range):
    """Draw one object per image (pairs [n, 2] colour, shape); returns (centres, radius)."""
    n = len(pairs)
    radius = _uniform(generator, n, *radius_range)
    centres = _centres(generator, radius)
    mirror = torch.rand(n, generator=generator) < 0.5
    rgb = _object_colours(generator, pairs[:, 0])
    _paint(canvas, shape_mask(pairs[:, 1], centres, radius, mirror), rgb)
    return centres, radius


def render_pretraining(pairs, generator):
    """Clean scenes of ``pairs`` [n, 2]: (images [n, 3, 32, 32] in [0, 1], centres [n, 2], radius [n])."""
    pairs = torch.as_tensor(pairs, dtype=torch.long).reshape(-1, 2)
    with single_thread():
        canvas = _background(generator, len(pairs))
        centres, radius = _draw_object(generator, canvas, pairs, PRETRAIN_RADIUS)
        return _finish(canvas), centres, radius


def render_downstream(pairs, distractors, generator):
    """Noisy scenes: object ``pairs`` [n, 2] over a smaller ``distractors`` [n, 2] object and clutter lines."""
    pairs = torch.as_tensor(pairs, dtype=torch.long).reshape(-1, 2)
    distractors = torch.as_tensor(distractors, dtype=torch.long).reshape(-1, 2)
    n = len(pairs)
    with single_thread():
        canvas = _background(generator, n)
        for _ in range(CLUTTER_LINES):
            ends = IMAGE_SIZE * torch.rand(n, 4, generator=generator)
            _paint(canvas, line_mask(ends), torch.rand(n, 3, generator=generator))
        _draw_object(generator, canvas, distractors, DISTRACTOR_RADIUS)
        _draw_object(generator, canvas, pairs, MAIN_RADIUS)
        image = F.avg_pool2d(canvas, SUPERSAMPLE)
        image = image + NOISE_STD * torch.randn(image.shape, generator=generator)
        return to_uint8(image).float() / 255
