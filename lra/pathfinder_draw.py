"""Draws Pathfinder images (Linsley et al. 2018, "Learning long-range spatial dependencies with
horizontal gated recurrent units", sec. 3; used by LRA, Tay et al. 2021, sec. 3.5).

An image holds two long "target" contours of `contour_length` dashes, short distractor contours
of `distractor_length` dashes and two round markers. A contour is a chain of steps: each step
is a dash ("paddle") followed by a gap, and turns by at most `max_turn` from the previous step
(bounded curvature). Contours keep `spacing` between centre lines (they never touch or cross,
so "same contour" is well defined), and a clear disc is kept around the four ends of the
target contours. Geometry is drawn first and independently of the label; only then are the
markers put down: label 1 puts them on both ends of one target contour, label 0 on one end of
each. Positives and negatives therefore have the same number of contours, dashes and markers
and the same pixel statistics; only the connectivity between the markers differs.

Everything is vectorised over a batch of images that grow their contours in lock step: free
space is an integer occupancy grid (2 cells per pixel) holding the id of the step that
reserved each cell; a candidate step is accepted when its centre line crosses only free cells
or cells of the step it continues. Images are rasterised from capsule distance fields with
anti-aliasing (intensity = clip(half_width + 0.5 - distance, 0, 1)).
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

DIFFICULTIES = {"easy": "curv_baseline", "intermediate": "curv_contour_length_9",
                "hard": "curv_contour_length_14"}
CONTOUR_LENGTHS = {"easy": 6, "intermediate": 9, "hard": 14}  # dashes per target contour
SUB = 2          # occupancy cells per pixel
DASH_BUDGET = 60  # target + distractor dashes in a 32 px image (constant ink across difficulty)
# Rejection sampling: (shapes in the first round (doubling each round), placements per shape),
# and rounds.
TARGET_CANDIDATES, DISTRACTOR_CANDIDATES, ROUNDS = (2, 16), (2, 4), 5
WAVE_SHAPES = 4  # shapes whose placements are tested together
TARGET_ATTEMPTS = 16  # fresh canvases for images whose two targets did not fit or match
DISTANCE_TOLERANCE = 0.25  # in steps: positive and negative marker distances agree this well


@dataclasses.dataclass(frozen=True)
class DrawSpec:
  """Geometry of one resolution and difficulty, in pixels."""
  resolution: int
  contour_length: int
  distractor_length: int
  num_distractors: int
  dash: float
  gap: float
  thickness: float
  marker_radius: float
  spacing: float
  max_turn: float

  @property
  def step(self) -> float:
    return self.dash + self.gap


def draw_spec(resolution: int, difficulty: str) -> DrawSpec:
  """Scales the 32 px geometry with s = sqrt(resolution / 32): dash, gap, thickness, marker
  and the number of dashes per contour all grow by s, so a contour spans the same fraction of
  the image at every resolution while dashes stay thin and the path gets longer in tokens."""
  if difficulty not in CONTOUR_LENGTHS:
    raise ValueError(f"Pathfinder difficulty {difficulty!r}; expected one of "
                     f"{', '.join(CONTOUR_LENGTHS)}")
  if resolution < 16:
    raise ValueError(f"Pathfinder resolution {resolution} is too small (at least 16)")
  s = math.sqrt(resolution / 32)
  length = CONTOUR_LENGTHS[difficulty]
  contour = max(2, round(length * s))
  distractor = max(2, round(length / 3 * s))
  budget = DASH_BUDGET * (resolution / 32)  # dashes per area stay constant
  num_distractors = max(1, round((budget - 2 * contour) / distractor))
  return DrawSpec(resolution, contour, distractor, num_distractors, dash=1.2 * s, gap=1.0 * s,
                  thickness=1.0 * s, marker_radius=1.5 * s, spacing=2.0 * s,
                  max_turn=math.radians(35))


# ----------------------------------------------------------------------------- free space
class Canvas:
  """Occupancy of a batch of images (SUB cells per pixel; True = taken), with a wall border
  (taken) so that contours stay inside and windows never leave the array."""

  def __init__(self, n: int, spec: DrawSpec):
    self.spec = spec
    reach = spec.step + 2 * spec.marker_radius + 2 * spec.spacing
    self.pad = int(math.ceil(reach * SUB)) + 4
    size = spec.resolution * SUB + 2 * self.pad
    self.taken = np.ones((n, size, size), bool)
    self.clear(np.arange(n))

  def clear(self, rows: np.ndarray) -> None:
    """Frees the drawable area of images `rows` (dashes stay half a thickness inside)."""
    lo = self.pad + int(math.ceil((self.spec.thickness / 2 + 0.5) * SUB))
    hi = self.taken.shape[1] - lo
    self.taken[rows, lo:hi, lo:hi] = False

  def lookup(self, rows: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Whether the cells under pixel coordinates `xy` `[m, ..., 2]` (x, y; inside the padded
    grid) of images `rows` `[m]` are taken."""
    size = self.taken.shape[1]
    g = (xy * SUB).astype(np.int32) + self.pad  # coordinates are >= 0: truncation is floor
    base = rows.astype(np.int64).reshape((-1,) + (1,) * (xy.ndim - 2)) * size * size
    return self.taken.reshape(-1)[base + g[..., 1] * size + g[..., 0]]

  def stamp(self, rows, a, b, radius):
    """Takes the cells within `radius` of segments a-b `[n, 2]` (a == b: a disc)."""
    size = int(math.ceil((np.max(np.abs(b - a), initial=0.0) + 2 * radius) * SUB)) + 3
    c0 = np.floor((np.minimum(a, b) - radius) * SUB).astype(np.int64) - 1 + self.pad
    ri = (c0[:, 1, None] + np.arange(size))[:, :, None]
    ci = (c0[:, 0, None] + np.arange(size))[:, None, :]
    index = (rows[:, None, None], ri, ci)
    centre = lambda i: ((i - self.pad).astype(np.float32) + 0.5) / SUB
    dist = segment_distance(centre(ci), centre(ri), a, b)
    self.taken[index] |= dist <= radius


def segment_distance(px, py, a, b):
  """Distance from points (px, py) `[n, h, w]` to segments a-b `[n, 2]` (capsule field)."""
  ax, ay = a[:, 0, None, None], a[:, 1, None, None]
  dx, dy = (b[:, 0] - a[:, 0])[:, None, None], (b[:, 1] - a[:, 1])[:, None, None]
  length2 = np.maximum(dx * dx + dy * dy, 1e-12)
  t = np.clip(((px - ax) * dx + (py - ay) * dy) / length2, 0.0, 1.0)
  return np.hypot(px - ax - t * dx, py - ay - t * dy)


def disc_probes(radius: float) -> np.ndarray:
  """Offsets `[k, 2]` (pixels) probing a disc: its centre and rings at least every cell.
  Reserved regions are capsules at least `spacing` wide, so none slips between the probes."""
  rings = [np.zeros((1, 2))]
  for r in (radius / 2, radius):
    count = max(6, int(math.ceil(2 * math.pi * r * SUB)))
    angle = np.arange(count) * (2 * math.pi / count)
    rings.append(r * np.stack([np.cos(angle), np.sin(angle)], -1))
  return np.concatenate(rings).astype(np.float32)


# ----------------------------------------------------------------------------- contours
def contour_shapes(spec: DrawSpec, n: int, count: int, steps: int, target: bool,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """`count` random shapes per image, points `[n, count, steps + 1, 2]` from the origin, and
  whether each keeps clear of itself `[n, count]`. A shape is a uniform heading, then a turn
  of U(-max_turn, max_turn) at every step (bounded curvature)."""
  turns = rng.uniform(-spec.max_turn, spec.max_turn, (n, count, steps)).astype(np.float32)
  turns[..., 0] = rng.uniform(-math.pi, math.pi, (n, count))
  heading = np.cumsum(turns, -1)
  moves = spec.step * np.stack([np.cos(heading), np.sin(heading)], -1)
  shape = np.concatenate([np.zeros((n, count, 1, 2), np.float32), np.cumsum(moves, 2)], 2)
  # Self-avoidance: points far apart along the path must be far apart in the image. Only
  # curly shapes can fail: while the heading stays within a range below 120 degrees,
  # chord >= arc * cos(60 deg) = arc / 2, so arc >= 2 * d already gives a chord >= d.
  ok = np.ones((n, count), bool)
  curly = np.ptp(heading, axis=-1) >= 2 * math.pi / 3
  ok[curly] = _keeps_clear(spec, shape[curly], target)
  return shape, ok


def _keeps_clear(spec: DrawSpec, shape: np.ndarray, target: bool) -> np.ndarray:
  """Exact self-avoidance test of shapes `[m, L, 2]` on half-step points."""
  mids = (shape[:, :-1] + shape[:, 1:]) / 2
  half = np.stack([shape[:, :-1], mids], 2).reshape(len(shape), 2 * (shape.shape[1] - 1), 2)
  half = np.concatenate([half, shape[:, -1:]], 1)  # [m, 2 * steps + 1, 2]
  arc = np.arange(half.shape[1]) * spec.step / 2  # arc length of each half-step point
  i, j = np.nonzero(np.triu(np.abs(arc[:, None] - arc[None, :]) >= 2 * spec.spacing))
  ok = ~(((half[:, i] - half[:, j]) ** 2).sum(-1) < spec.spacing ** 2).any(-1)
  if target:  # the marker discs at both ends stay clear of the rest of the contour
    reach = spec.marker_radius + spec.spacing
    for end, end_arc in ((shape[:, 0], 0.0), (dash_end(spec, shape), arc[-1] - spec.gap)):
      near = ((half - end[:, None]) ** 2).sum(-1) < reach ** 2
      ok &= ~(near & (np.abs(arc - end_arc) >= 2 * reach)).any(-1)
  return ok


def place_shapes(spec: DrawSpec, shape: np.ndarray, placements: int, target: bool,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """Moves each shape to `placements` uniform positions among those that keep it (and, for
  targets, its marker discs) inside the image: points `[n, count * placements, L, 2]` and
  whether the shape fits at all. Long contours are thus never rejected for leaving the image."""
  border = spec.thickness / 2 + 1.0 / SUB
  lower, upper = border - shape.min(2), spec.resolution - border - shape.max(2)
  if target:
    ends = np.stack([shape[:, :, 0], dash_end(spec, shape)], 2)
    clear = spec.marker_radius + spec.spacing / 2 + border + 1.0 / SUB
    lower = np.maximum(lower, clear - ends.min(2))
    upper = np.minimum(upper, spec.resolution - clear - ends.max(2))
  inside = (upper > lower).all(-1)
  u = rng.uniform(0, 1, lower.shape[:2] + (placements, 2)).astype(np.float32)
  offset = lower[:, :, None] + u * (upper - lower)[:, :, None]  # [n, count, placements, 2]
  points = shape[:, :, None] + offset[:, :, :, None]
  n, count = shape.shape[:2]
  return (points.reshape(n, count * placements, shape.shape[2], 2),
          np.repeat(inside, placements, axis=1))


def dash_end(spec: DrawSpec, points: np.ndarray) -> np.ndarray:
  """End of the last dash (where the head marker goes)."""
  return points[..., -2, :] + (points[..., -1, :] - points[..., -2, :]) * (spec.dash / spec.step)


def fits(canvas: Canvas, rows: np.ndarray, points: np.ndarray, target: bool) -> np.ndarray:
  """Which candidates `[m]` (contour `points` `[m, L, 2]` in image `rows` `[m]`) have free
  marker discs at both ends (targets) and run over free cells only."""
  spec = canvas.spec
  ok = np.ones(len(rows), bool)
  if target:
    offsets = disc_probes(spec.marker_radius + spec.spacing / 2)
    for end in (points[:, 0], dash_end(spec, points)):
      ok &= ~canvas.lookup(rows, end[:, None] + offsets).any(-1)
  rest = np.flatnonzero(ok)  # coarse test on the step ends first: most misses fail there
  ok[rest] = ~canvas.lookup(rows[rest], points[rest]).any(-1)
  samples = int(math.ceil(spec.step * SUB))  # then probes at most one cell apart
  t = (np.arange(1, samples, dtype=np.float32) / samples)[:, None]
  rest = np.flatnonzero(ok)
  pts = points[rest]
  probe = pts[:, :-1, None] + t * (pts[:, 1:, None] - pts[:, :-1, None])
  ok[rest] = ~canvas.lookup(rows[rest], probe).any((1, 2))
  return ok


def place_contours(canvas: Canvas, rows: np.ndarray, steps: int, target: bool,
                   rng: np.random.Generator, shapes: int, placements: int, rounds: int):
  """Puts one contour into every image: the first fitting candidate (`shapes` random shapes,
  each at `placements` positions; tested a few at a time, only for images still without a
  contour); images without one get new candidates (up to `rounds`).
  Returns (ok `[m]`, points `[m, steps + 1, 2]`) for the images `rows` `[m]`."""
  spec = canvas.spec
  ok = np.zeros(len(rows), bool)
  points = np.zeros((len(rows), steps + 1, 2), np.float32)
  todo = np.arange(len(rows))
  for round_ in range(rounds):  # more shapes each round: only the hard images are left
    shape, self_ok = contour_shapes(spec, len(todo), shapes << round_, steps, target, rng)
    cand, inside = place_shapes(spec, shape, placements, target, rng)
    usable = np.repeat(self_ok, placements, axis=1) & inside
    chosen = np.full(len(todo), -1)
    wave = WAVE_SHAPES * placements
    for first in range(0, usable.shape[1], wave):
      r, c = np.nonzero(usable[:, first:first + wave] & (chosen < 0)[:, None])
      good = fits(canvas, rows[todo[r]], cand[r, first + c], target)
      hit, index = np.unique(r[good], return_index=True)  # first fitting one per image
      chosen[hit] = first + c[good][index]
      if (chosen >= 0).all():
        break
    found = chosen >= 0
    ok[todo[found]] = True
    points[todo[found]] = cand[np.flatnonzero(found), chosen[found]]
    todo = todo[~found]
    if not len(todo):
      break
  for k in range(steps):  # reserve a corridor of `spacing` around the centre line
    canvas.stamp(rows[ok], points[ok, k], points[ok, k + 1], spec.spacing)
  if target:  # and room around both ends for the markers
    for end in (points[ok, 0], dash_end(spec, points[ok])):
      canvas.stamp(rows[ok], end, end, spec.marker_radius + spec.spacing)
  return ok, points


# ----------------------------------------------------------------------------- images
def match_marker_distance(spec: DrawSpec, ends: np.ndarray):
  """The marker pairs of both classes, chosen from the geometry alone so that the distance
  between the two markers does not give the label away. `ends` `[contour, end, n, 2]`.

  A positive marks both ends of target contour `which`; a negative marks end i of contour 0
  and end j of contour 1. Of the 2 x 4 combinations, the one whose negative distance is
  closest to its positive distance is used; images where they differ by more than a quarter
  step are redrawn (whatever their label), so both classes see the same distances."""
  positive = np.linalg.norm(ends[:, 0] - ends[:, 1], axis=-1)  # [contour, n]
  negative = np.stack([np.linalg.norm(ends[0, i] - ends[1, j], axis=-1)
                       for i in (0, 1) for j in (0, 1)])  # [i * 2 + j, n]
  gap = np.abs(positive[:, None] - negative[None])  # [which, pair, n]
  best = gap.reshape(8, -1).argmin(0)
  which, pair = np.divmod(best, 4)
  ok = gap.reshape(8, -1).min(0) <= DISTANCE_TOLERANCE * spec.step
  return ok, which, pair // 2, pair % 2


def draw_batch(spec: DrawSpec, labels: np.ndarray, rng: np.random.Generator):
  """Draws `len(labels)` images; returns (uint8 `[n, R, R]`, valid `[n]`). Images whose two
  target contours could not be placed (rare) are invalid and the caller draws them again; a
  distractor that finds no room is left out (equally often in both classes: the geometry
  never sees the label)."""
  n = len(labels)
  canvas = Canvas(n, spec)
  steps = spec.contour_length
  targets = np.zeros((2, n, steps + 1, 2), np.float32)
  valid = np.zeros(n, bool)
  which, end_0, end_1 = (np.zeros(n, np.int64) for _ in range(3))
  todo = np.arange(n)
  for _ in range(TARGET_ATTEMPTS):  # both targets again where they do not fit or match
    canvas.clear(todo)
    ok = np.ones(len(todo), bool)
    for t in range(2):
      got, points = place_contours(canvas, todo, steps, True, rng, *TARGET_CANDIDATES, ROUNDS)
      targets[t, todo] = points
      ok &= got
    ends = np.stack([np.stack([targets[t, todo, 0], dash_end(spec, targets[t, todo])])
                     for t in range(2)])
    matched, which[todo], end_0[todo], end_1[todo] = match_marker_distance(spec, ends)
    ok &= matched
    valid[todo[ok]] = True
    todo = todo[~ok]
    if not len(todo):
      break
  dashes = [(targets[t][:, k], targets[t][:, k + 1], valid)
            for t in range(2) for k in range(steps)]
  rows = np.flatnonzero(valid)
  for _ in range(spec.num_distractors):
    ok, points = place_contours(canvas, rows, spec.distractor_length, False, rng,
                                *DISTRACTOR_CANDIDATES, ROUNDS)
    full = np.zeros((n,) + points.shape[1:], np.float32)
    full[rows] = points
    on = np.zeros(n, bool)
    on[rows[ok]] = True
    dashes += [(full[:, k], full[:, k + 1], on) for k in range(spec.distractor_length)]
  dashes = [(a, a + (b - a) * (spec.dash / spec.step), on) for a, b, on in dashes]
  # Markers go down only now, so nothing above depends on the label (sec. 3 of the paper):
  # label 1 marks both ends of target contour `which`, label 0 one end of each contour.
  ends = np.stack([np.stack([targets[t, :, 0], dash_end(spec, targets[t])]) for t in range(2)])
  index = np.arange(n)
  positive = labels[:, None] == 1
  first = np.where(positive, ends[which, 0, index], ends[0, end_0, index])
  second = np.where(positive, ends[which, 1, index], ends[1, end_1, index])
  return rasterise(spec, dashes, [first, second]), valid


def rasterise(spec: DrawSpec, dashes, markers) -> np.ndarray:
  """Anti-aliased flat-ended paddles and round markers, combined by max, as uint8."""
  res, n = spec.resolution, len(markers[0])
  pad = int(math.ceil(spec.step + 2 * spec.marker_radius)) + 3
  canvas = np.zeros((n, res + 2 * pad, res + 2 * pad), np.float32)
  rows = np.arange(n)[:, None, None]

  def window(lo, size):
    corner = np.floor(lo).astype(np.int64) - 1 + pad
    ri = (corner[:, 1, None] + np.arange(size))[:, :, None]
    ci = (corner[:, 0, None] + np.arange(size))[:, None, :]
    return ri, ci, ci - pad + 0.5, ri - pad + 0.5  # indices, pixel centres

  half = spec.thickness / 2
  size = int(math.ceil(spec.dash + 2 * half)) + 3
  for a, b, on in dashes:
    ri, ci, px, py = window(np.minimum(a, b) - half, size)
    u = (b - a) / spec.dash
    rel_x, rel_y = px - a[:, 0, None, None], py - a[:, 1, None, None]
    along = rel_x * u[:, 0, None, None] + rel_y * u[:, 1, None, None]
    across = np.abs(rel_x * u[:, 1, None, None] - rel_y * u[:, 0, None, None])
    ink = (np.clip(half + 0.5 - across, 0, 1)
           * np.clip(np.minimum(along, spec.dash - along) + 0.5, 0, 1) * on[:, None, None])
    canvas[rows, ri, ci] = np.maximum(canvas[rows, ri, ci], ink)
  size = int(math.ceil(2 * spec.marker_radius)) + 3
  for centre in markers:
    ri, ci, px, py = window(centre - spec.marker_radius, size)
    dist = np.hypot(px - centre[:, 0, None, None], py - centre[:, 1, None, None])
    canvas[rows, ri, ci] = np.maximum(canvas[rows, ri, ci],
                                      np.clip(spec.marker_radius + 0.5 - dist, 0, 1))
  image = canvas[:, pad:pad + res, pad:pad + res]
  return np.round(image * 255).astype(np.uint8)


def draw_images(spec: DrawSpec, labels: np.ndarray, rng: np.random.Generator,
                batch: int = 256) -> np.ndarray:
  """Images (uint8 `[n, R, R]`) whose row i has label `labels[i]`; rows whose target
  contours could not be placed are drawn again (same label), so the balance is kept."""
  out = np.zeros((len(labels), spec.resolution, spec.resolution), np.uint8)
  pending = np.arange(len(labels))
  for _ in range(100 + 10 * len(labels) // batch):
    if not len(pending):
      return out
    rows = pending[:batch]
    images, valid = draw_batch(spec, labels[rows], rng)
    out[rows[valid]] = images[valid]
    pending = np.concatenate([rows[~valid], pending[batch:]])
  raise RuntimeError(f"cannot place the target contours of {len(pending)} Pathfinder images "
                     f"with {spec}; the geometry does not fit the resolution")
