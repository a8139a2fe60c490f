"""Path planning on a Doom map: a walkable occupancy grid built from the map's sector lines, and A* on it.

The grid needs the geometry ViZDoom reports in `state.sectors` (floor and ceiling heights and line endpoints) and the
positions of solid things (pillars, barrels, trees) from `state.objects`.
A line blocks the player when it is one-sided, flagged impassable, a step higher than MAX_STEP, or an opening lower
than the player (which also makes closed doors walls: paths never need a door to open). A cell is inside the map when
a ray from it crosses one-sided lines an odd number of times; it is walkable when it is inside and at least
MIN_CLEARANCE from every blocking line. A* charges extra for cells near walls so that the walker keeps to the middle
of rooms and corridors instead of filming wall textures at close range.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

CELL = 16.0           # map units per grid cell (the player's radius)
MAX_STEP = 24.0       # the highest step the Doom player climbs
PLAYER_HEIGHT = 56.0  # the lowest opening the player passes
MIN_CLEARANCE = 28.0  # walkable cells keep this far from walls (player radius 16 + slack for the controller)
WALL_COST_RANGE = 96.0  # closer than this to a wall, a step costs up to 1 + WALL_COST_WEIGHT times more
WALL_COST_WEIGHT = 4.0

Line = tuple[float, float, float, float]
_SQRT2 = math.sqrt(2)


def _line_key(line) -> tuple:
    return tuple(sorted([(line.x1, line.y1), (line.x2, line.y2)]))


def classify_lines(sectors: Iterable) -> tuple[list[Line], list[Line]]:
    """Split a map's lines into (blocking, one_sided). Two-sided lines appear in both of their sectors' lists."""
    owners: dict[tuple, list] = {}
    flagged: Counter = Counter()
    for sector in sectors:
        for line in sector.lines:
            key = _line_key(line)
            owners.setdefault(key, []).append(sector)
            flagged[key] += bool(line.is_blocking)
    blocking, one_sided = [], []
    for key, secs in owners.items():
        (x1, y1), (x2, y2) = key
        if len(secs) == 1:
            one_sided.append((x1, y1, x2, y2))
            blocking.append((x1, y1, x2, y2))
            continue
        front, back = secs[0], secs[1]
        step = abs(front.floor_height - back.floor_height)
        opening = min(front.ceiling_height, back.ceiling_height) - max(front.floor_height, back.floor_height)
        if flagged[key] or step > MAX_STEP or opening < PLAYER_HEIGHT:
            blocking.append((x1, y1, x2, y2))
    return blocking, one_sided


@dataclass
class WalkGrid:
    """A map's occupancy grid. Row index follows map y, column index map x; cell (0, 0) starts at `origin`."""

    origin: tuple[float, float]
    walls: np.ndarray       # bool [H, W]: cells a blocking line passes through or a solid thing covers
    clearance: np.ndarray   # float [H, W]: map units from the cell centre to the nearest wall cell
    region: np.ndarray      # bool [H, W]: the largest connected set of walkable cells; every A, B, C lies in it
    costs: np.ndarray       # float [H, W]: cost multiplier of entering a cell (see wall_costs)
    cell: float = CELL
    _free: list = field(init=False, repr=False)
    _cost: list = field(init=False, repr=False)

    def to_cell(self, x: float, y: float) -> tuple[int, int]:
        return int((y - self.origin[1]) // self.cell), int((x - self.origin[0]) // self.cell)

    def to_world(self, row: int, col: int) -> tuple[float, float]:
        return self.origin[0] + (col + 0.5) * self.cell, self.origin[1] + (row + 0.5) * self.cell

    def region_points(self) -> np.ndarray:
        """Centres of the region's cells, [N, 2] map units, in a fixed (row-major) order."""
        rows, cols = np.nonzero(self.region)
        return np.stack([self.origin[0] + (cols + 0.5) * self.cell, self.origin[1] + (rows + 0.5) * self.cell], axis=1)

    def __post_init__(self):
        # A* runs on flat Python lists: much faster than indexing numpy arrays one cell at a time. The region never
        # touches the grid's border (build_grid pads it with outside cells), so neighbours need no bounds checks.
        if self.region[[0, -1]].any() or self.region[:, [0, -1]].any():
            raise ValueError("the walkable region must not touch the grid border")
        self._free = self.region.ravel().tolist()
        self._cost = self.costs.ravel().tolist()

    def plan(self, start: Sequence[float], goal: Sequence[float],
             max_expansions: int = 200_000) -> list[tuple[float, float]] | None:
        """A* from `start` to `goal` (map units) over region cells, 8-connected without cutting corners.

        Returns the cell centres of the path (start excluded, goal cell included) or None when unreachable.
        """
        src, dst = self.to_cell(*start), self.to_cell(*goal)
        if not (self._inside(src) and self._inside(dst)):
            return None
        free, cost, width = self._free, self._cost, self.region.shape[1]
        goal_row, goal_col = dst
        src_index, dst_index = src[0] * width + src[1], dst[0] * width + dst[1]
        # (index offset, step length, the two orthogonal neighbours a diagonal step must not cut between)
        moves = [(-width, 1.0, 0, 0), (width, 1.0, 0, 0), (-1, 1.0, 0, 0), (1, 1.0, 0, 0),
                 (-width - 1, _SQRT2, -width, -1), (-width + 1, _SQRT2, -width, 1),
                 (width - 1, _SQRT2, width, -1), (width + 1, _SQRT2, width, 1)]

        best = {src_index: 0.0}
        parent: dict[int, int] = {}
        frontier = [(0.0, 0.0, src_index)]
        expansions = 0
        while frontier:
            _, so_far, index = heapq.heappop(frontier)
            if index == dst_index:
                path = [index]
                while path[-1] != src_index:
                    path.append(parent[path[-1]])
                cells = [divmod(i, width) for i in reversed(path[:-1])] or [dst]
                return [self.to_world(row, col) for row, col in cells]
            if so_far > best[index]:
                continue
            expansions += 1
            if expansions > max_expansions:
                return None
            for offset, length, side_a, side_b in moves:
                neighbour = index + offset
                if not free[neighbour] or (side_a and not (free[index + side_a] and free[index + side_b])):
                    continue
                new = so_far + length * cost[neighbour]
                if new < best.get(neighbour, math.inf):
                    best[neighbour] = new
                    parent[neighbour] = index
                    # octile distance to the goal (inlined: this is the hot loop); admissible as steps cost >= length
                    row, col = divmod(neighbour, width)
                    dr, dc = abs(row - goal_row), abs(col - goal_col)
                    estimate = dr + (_SQRT2 - 1) * dc if dr > dc else dc + (_SQRT2 - 1) * dr
                    heapq.heappush(frontier, (new + estimate, new, neighbour))
        return None

    def wall_distance(self, x: float, y: float, yaw: float, max_distance: float) -> float:
        """Distance (map units) along a ray from (x, y) at `yaw` radians to the first wall cell, capped."""
        step = self.cell / 2
        for k in range(1, int(max_distance / step) + 1):
            row, col = self.to_cell(x + k * step * math.cos(yaw), y + k * step * math.sin(yaw))
            if not (0 <= row < self.walls.shape[0] and 0 <= col < self.walls.shape[1]) or self.walls[row, col]:
                return k * step
        return max_distance

    def _inside(self, cell: tuple[int, int]) -> bool:
        r, c = cell
        return 0 <= r < self.region.shape[0] and 0 <= c < self.region.shape[1] and bool(self.region[r, c])


def wall_costs(clearance: np.ndarray) -> np.ndarray:
    """Cost multiplier per cell: 1 in the open, rising linearly to 1 + WALL_COST_WEIGHT at a wall."""
    closeness = np.clip(1.0 - clearance / WALL_COST_RANGE, 0.0, 1.0)
    return 1.0 + WALL_COST_WEIGHT * closeness


def build_grid(sectors: Iterable, obstacles: Iterable[tuple[float, float, float]] = (), cell: float = CELL) -> WalkGrid:
    """The WalkGrid of a map from ViZDoom's `state.sectors` (needs `set_sectors_info_enabled(True)`), with solid
    things (x, y, radius), e.g. pillars and barrels, marked as walls."""
    import cv2

    sectors = list(sectors)
    blocking, one_sided = classify_lines(sectors)
    if not one_sided:
        raise ValueError("the map reports no one-sided lines: sector information is missing")
    coords = np.array(blocking, dtype=np.float64)
    x_min, y_min = coords[:, [0, 2]].min() - 2 * cell, coords[:, [1, 3]].min() - 2 * cell
    x_max, y_max = coords[:, [0, 2]].max() + 2 * cell, coords[:, [1, 3]].max() + 2 * cell
    width, height = int(math.ceil((x_max - x_min) / cell)), int(math.ceil((y_max - y_min) / cell))
    origin = (float(x_min), float(y_min))

    walls = np.zeros((height, width), np.uint8)
    for x1, y1, x2, y2 in blocking:  # 8-connected lines: a 4-connected region never leaks through them
        p1 = (int((x1 - x_min) // cell), int((y1 - y_min) // cell))
        p2 = (int((x2 - x_min) // cell), int((y2 - y_min) // cell))
        cv2.line(walls, p1, p2, 1, thickness=1, lineType=cv2.LINE_8)
    for x, y, radius in obstacles:
        centre = (int((x - x_min) // cell), int((y - y_min) // cell))
        cv2.circle(walls, centre, int(math.ceil(radius / cell)), 1, thickness=-1)
    walls = walls.astype(bool)

    inside = _inside_map(one_sided, origin, cell, (height, width))
    # exact Euclidean distance from every free cell to the nearest wall cell
    clearance = cv2.distanceTransform((~walls).astype(np.uint8), cv2.DIST_L2,
                                      cv2.DIST_MASK_PRECISE).astype(np.float64) * cell
    walkable = inside & ~walls & (clearance >= MIN_CLEARANCE)
    # 4-connectivity, the same as A* without corner cutting
    count, labels, stats, _ = cv2.connectedComponentsWithStats(walkable.astype(np.uint8), connectivity=4)
    if count < 2:
        raise ValueError("the map has no walkable cells")
    region = labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return WalkGrid(origin=origin, walls=walls, clearance=clearance, region=region, costs=wall_costs(clearance),
                    cell=cell)


def _inside_map(one_sided: list[Line], origin: tuple[float, float], cell: float, shape: tuple[int, int]) -> np.ndarray:
    """Even-odd rule: a cell centre is inside the map when a ray towards +x crosses one-sided lines an odd number of
    times (two-sided lines separate sectors that are both inside, so they are left out)."""
    height, width = shape
    crossings = np.zeros((height, width + 1), np.int32)
    centres_y = origin[1] + (np.arange(height) + 0.5) * cell
    for x1, y1, x2, y2 in one_sided:
        if y1 == y2:
            continue
        lo, hi = min(y1, y2), max(y1, y2)
        rows = np.nonzero((centres_y >= lo) & (centres_y < hi))[0]
        if not len(rows):
            continue
        x_cross = x1 + (centres_y[rows] - y1) * (x2 - x1) / (y2 - y1)
        # cells whose centre lies left of the crossing see it on their ray: columns [0, first_right)
        first_right = np.clip(np.ceil((x_cross - origin[0]) / cell - 0.5).astype(int), 0, width)
        np.add.at(crossings, (rows, first_right), 1)
    to_the_right = np.cumsum(crossings[:, ::-1], axis=1)[:, ::-1]  # crossings at columns > c, for column c
    return (to_the_right[:, 1:] % 2).astype(bool)
