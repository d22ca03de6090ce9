"""Stage 5 of reading an image (images.py): the ink's connected components grouped into glyphs
(strokes that overlap in columns are one glyph); the heaviest is the digit, and further glyphs of
a similar size beside it are kept; frames and margins (ink across the whole image) left out."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BOX_SUM_COMPONENTS = 9  # up to this many components, masses are summed inside their boxes (_component_mass)
EDGE_BAND = 0.04  # of the image's smaller side: the band along its edges where a frame's or shadow's ink lies
SURROUND_CONTACT = 0.6  # along this share of a side (and reaching another): a table or shadow around a sheet
FRAME_IN_BAND = 0.9  # a component with this share of its pixels in the edge band is a frame or a margin
FRAME_OUTWEIGHS = 0.1  # frames are left out only when other ink weighs this share of the heaviest frame
OUTLINE_FILL = 0.12  # a component filling less of its box than this, around other ink, is an outline
ENCLOSED_WEIGHT = 0.05  # of the outline's mass: ink inside it that makes it an outline and not a glyph
SPECK = 0.04  # of the heaviest part's mass: lighter parts are specks and noise
SAME_GLYPH_OVERLAP = 0.5  # of the narrower stroke: strokes overlapping this much in columns are one glyph
SAME_GLYPH_GAP = 0.5  # of the taller stroke: ... when their vertical gap is smaller than this
NEAR_REACH, NEAR_BACK = 1.3, 0.3  # a stroke within the digit's box widened by 30 % each way is near it
BESIDE_HEIGHT = 0.5  # of the digit's height: a glyph this tall, level with it, stands beside it ("35")
BESIDE_LEVEL = 0.3  # of the shorter one's height: the vertical overlap that makes two glyphs level
STRONG_MARK = 0.25  # of the digit's mass: a glyph this heavy is a glyph or a mark of its own, not a flick


@dataclass
class Glyph:
    box: tuple[int, int, int, int]  # x, y, width, height
    labels: list[int]
    mass: float


def _component_mass(ink: np.ndarray, labels: np.ndarray, stats: np.ndarray, count: int) -> np.ndarray:
    """The ink of each component (index 0, the background, is not used). A few components of a
    uint8 map are summed inside their boxes, far less work than one weighted count over the image,
    and the same sums exactly (whole numbers: float64 adds them without rounding)."""
    import cv2

    if count > BOX_SUM_COMPONENTS or ink.dtype != np.uint8:
        return np.bincount(labels.ravel(), weights=ink.ravel(), minlength=count)
    mass = np.zeros(count)
    for i in range(1, count):
        x, y, bw, bh = stats[i, [cv2.CC_STAT_LEFT, cv2.CC_STAT_TOP, cv2.CC_STAT_WIDTH, cv2.CC_STAT_HEIGHT]]
        box = (slice(y, y + bh), slice(x, x + bw))
        mass[i] = ink[box][labels[box] == i].sum(dtype=np.float64)
    return mass


def _band_counts(labels: np.ndarray, count: int, inner: int) -> np.ndarray:
    """How many pixels of each component lie within inner pixels of the image's edges, counted on
    the band's four strips (top, bottom, then the sides between them) rather than a mask of the
    whole image; the band is the whole image when the image is no wider than two strips."""
    h, w = labels.shape
    if h > 2 * inner and w > 2 * inner:
        strips = (labels[:inner], labels[-inner:], labels[inner:-inner, :inner], labels[inner:-inner, -inner:])
    else:
        strips = (labels,)
    return sum(np.bincount(strip.ravel(), minlength=count)[:count] for strip in strips)


def find_glyphs(ink: np.ndarray, binary: np.ndarray, edge: int = 0) -> tuple[list[Glyph], np.ndarray, str | None]:
    """The glyphs of the ink, left to right, with the component labels, and a doubt when a mark
    nearly as strong as the heaviest glyph lies apart from it. edge: the width of the strip along
    the image's edges that was left out (a component that reaches it touches the edge)."""
    import cv2

    count, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    h, w = binary.shape
    mass = _component_mass(ink, labels, stats, count)
    # Ink that lies along the image's edges (within 4 % of its side) is a frame's or a shadow's rim.
    in_band = _band_counts(labels, count, max(1, int(EDGE_BAND * min(h, w)))) / np.maximum(stats[:, cv2.CC_STAT_AREA], 1)
    # How far along the image's sides each component lies (the longest share of one side, on the
    # first line inside the strip left out): a table or a shadow around a sheet runs along a side.
    first, last_row, last_col = min(edge, h - 1), max(h - 1 - edge, 0), max(w - 1 - edge, 0)
    contact = np.zeros(count)
    for line, side in ((labels[first], w), (labels[last_row], w), (labels[:, first], h), (labels[:, last_col], h)):
        contact = np.maximum(contact, np.bincount(line, minlength=count)[:count] / side)
    parts, frames, surrounds = [], [], []
    for i in range(1, count):
        x, y, bw, bh, area = stats[i]
        reach = edge + 2
        edges = int(x <= reach) + int(y <= reach) + int(x + bw >= w - reach) + int(y + bh >= h - reach)  # sides reached
        part = (i, (int(x), int(y), int(bw), int(bh)), float(mass[i]))
        # Along most of one side and reaching another: the surround of a sheet not found (a table, a
        # shadow). A digit drawn against one edge (a 7's bar along the top of a pad) reaches one side only.
        if contact[i] > SURROUND_CONTACT and edges >= 2:
            surrounds.append(part)
        elif in_band[i] > FRAME_IN_BAND:  # a frame, a margin, the edge of a sheet of paper: ink in the edge band
            # (A component that merely spans the image and reaches two sides is no frame: a blurred
            # scan's digit does that, and is lost when it is taken for one; docs/model_card.md.)
            frames.append(part)
        else:
            parts.append(part)
    # A digit that fills the frame (a tight crop, a low-resolution scan) touches its edges too: what
    # looks like a frame is left out only when it leaves something of weight besides it; a surround
    # is left out whenever anything else is there (a table outweighs any digit on the sheet).
    if frames and (not parts or max(p[2] for p in parts) < FRAME_OUTWEIGHS * max(f[2] for f in frames)):
        parts = parts + frames
    if not parts:
        parts = surrounds

    # An outline around other ink is a frame (a sticky note's or a box's edge), not a glyph.
    def encloses(outer, inner) -> bool:
        (ox, oy, ow, oh), (ix, iy, iw, ih) = outer, inner
        return ox < ix and oy < iy and ox + ow > ix + iw and oy + oh > iy + ih

    parts = [
        p
        for p in parts
        if not (
            stats[p[0], cv2.CC_STAT_AREA] < OUTLINE_FILL * p[1][2] * p[1][3]
            and any(encloses(p[1], q[1]) and q[2] >= ENCLOSED_WEIGHT * p[2] for q in parts if q is not p)
        )
    ]
    if not parts:
        return [], labels, None
    heaviest = max(m for *_, m in parts)
    parts = [p for p in parts if p[2] >= SPECK * heaviest]
    # Strokes that overlap in columns (or nearly touch) are one glyph.
    parts.sort(key=lambda p: p[1][0])
    glyphs: list[Glyph] = []
    for i, (x, y, bw, bh), m in parts:
        for g in glyphs:
            gx, gy, gw, gh = g.box
            overlap = min(x + bw, gx + gw) - max(x, gx)
            gap_y = max(gy - (y + bh), y - (gy + gh))
            if overlap > SAME_GLYPH_OVERLAP * min(bw, gw) and gap_y < SAME_GLYPH_GAP * max(bh, gh):
                nx, ny = min(x, gx), min(y, gy)
                g.box = (nx, ny, max(x + bw, gx + gw) - nx, max(y + bh, gy + gh) - ny)
                g.labels.append(i)
                g.mass += m
                break
        else:
            glyphs.append(Glyph((x, y, bw, bh), [i], m))
    glyphs.sort(key=lambda g: -g.mass)
    main = glyphs[0]
    mx, my, mw, mh = main.box
    # Small strokes near the digit belong to it (a 7's bar, a stray flick), the rest is apart.
    doubt = None
    kept = [main]
    for g in glyphs[1:]:
        gx, gy, gw, gh = g.box
        near = (
            gx < mx + NEAR_REACH * mw
            and gx + gw > mx - NEAR_BACK * mw
            and gy < my + NEAR_REACH * mh
            and gy + gh > my - NEAR_BACK * mh
        )
        level = min(gy + gh, my + mh) - max(gy, my) > BESIDE_LEVEL * min(gh, mh)
        beside = gh >= BESIDE_HEIGHT * mh and level and g.mass >= STRONG_MARK * main.mass
        if beside:
            kept.append(g)
        elif near and g.mass < STRONG_MARK * main.mass:
            main.labels += g.labels
            nx, ny = min(mx, gx), min(my, gy)
            main.box = (nx, ny, max(mx + mw, gx + gw) - nx, max(my + mh, gy + gh) - ny)
            mx, my, mw, mh = main.box
        elif g.mass >= STRONG_MARK * main.mass:
            doubt = "another mark nearly as strong as the digit"
    return sorted(kept, key=lambda g: g.box[0]), labels, doubt
