"""Images as people send them, made from a digit's ink, and images of things that are not digits.

Used three ways, always with distinct seeds: the digit-ness detector's training (train_digitness.py)
learns the non-digits from them (its own draw), the tests read each kind of input (their own draws), and
benchmarks/robustness.py scores the shipped model on all of them (its own draws). Every maker takes
ink [H, W] float 0..255 (light on dark, like MNIST) or draws its own, and a numpy Generator, and
returns encoded image bytes (PNG or JPEG).

Scenes of a sheet of paper:
- photo_on_table: a sheet on wood, fabric, stone or a dark desk, turned up to 30 degrees, in
  perspective, 30-95 % of the frame, a shadow across it, a color cast, JPEG 60-90;
- notebook: ruled or squared paper photographed from above, slightly turned;
- whiteboard, sticky_note, closeup: marker on a glossy board, a colored note on a desk, the digit
  alone closely framed;
- thick_marker: strokes a quarter to a third of the digit wide, dark on paper or light on a dark board;
- small_on_lines: a digit one to two line gaps tall written on ruled or squared paper, crossing its lines;
- low_resolution_scan: 16-40 pixels a side, blurred, enlarged back or not.
Non-digits (each an ink map): letters in several fonts, signs, scribbles, blobs, dots, marks (a
tick, a cross, a dash), numbers of two or three digits.
Digit images drawn directly: render (an MNIST digit as people save it: thick, thin, small on a
large canvas, noisy uneven paper, colored ink, a photo with margins, transparent), typeset (the
digits in matplotlib's fonts), pen_strokes and small_drawings (digits as jittered pen strokes, on
a canvas or small on the page's pad), and non_digit_images (non-digits on paper or photographed).
"""

from __future__ import annotations

import io
import string
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

JPEG = "JPEG"


def encode(rgb: np.ndarray, fmt: str = "PNG", quality: int = 85) -> bytes:
    """Pixels (float or int, clipped to 0..255) encoded as PNG, or JPEG at `quality`."""
    return encode_image(
        Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)), fmt, **({"quality": quality} if fmt == JPEG else {})
    )


def encode_image(img: Image.Image, fmt: str = "PNG", **options: object) -> bytes:
    """A PIL image encoded as PNG (or the format named, with its options) bytes."""
    out = io.BytesIO()
    img.save(out, format=fmt, **options)
    return out.getvalue()


def fit_ink(ink: np.ndarray, side: int) -> np.ndarray:
    """Ink scaled so that its larger side is `side` pixels (smooth)."""
    import cv2

    h, w = ink.shape
    scale = side / max(h, w)
    return cv2.resize(
        ink.astype(np.float32), (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_CUBIC
    )


def lay_ink(paper: np.ndarray, ink: np.ndarray, top: int, left: int, color: float | np.ndarray) -> None:
    """Ink (0..255) laid in place on paper [H, W, 3] float, in a pen color, clipped to the paper."""
    h, w = ink.shape
    H, W = paper.shape[:2]
    t, l_ = max(0, top), max(0, left)
    b, r = min(H, top + h), min(W, left + w)
    if b <= t or r <= l_:
        return
    a = np.clip(ink[t - top : b - top, l_ - left : r - left] / 255.0, 0, 1)[..., None]
    paper[t:b, l_:r] = paper[t:b, l_:r] * (1 - a) + np.asarray(color, np.float64) * a


PENS = [(25, 25, 30), (20, 40, 140), (15, 15, 60), (120, 20, 20), (40, 40, 40)]


def _pen(rng: np.random.Generator) -> tuple:
    return tuple(int(c + rng.integers(-10, 10)) for c in PENS[int(rng.integers(len(PENS)))])


def _texture(kind: str, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A table's surface [h, w, 3] float."""
    import cv2

    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == "wood":
        angle = rng.uniform(0, np.pi)
        u = xx * np.cos(angle) + yy * np.sin(angle)
        v = -xx * np.sin(angle) + yy * np.cos(angle)
        warp = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), 25) * 400
        grain = np.sin((u + warp) / rng.uniform(3, 9)) * 0.5 + 0.5
        base = np.array([rng.uniform(110, 170), rng.uniform(70, 110), rng.uniform(35, 60)])
        shade = 0.75 + 0.35 * grain[..., None] + 0.05 * np.sin(v / 40)[..., None]
        return base * shade
    if kind == "fabric":
        period = rng.uniform(4, 10)
        weave = (np.sin(xx / period) * np.sin(yy / period)) * 0.5 + 0.5
        base = rng.uniform(40, 160, 3)
        return base * (0.8 + 0.3 * weave[..., None]) + rng.normal(0, 8, (h, w, 1))
    if kind == "stone":
        spots = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), rng.uniform(2, 6))
        spots = spots / (np.abs(spots).max() + 1e-6)
        base = rng.uniform(90, 150)
        return np.repeat((base + 60 * spots + rng.normal(0, 10, (h, w)))[..., None], 3, -1)
    # a dark desk
    base = rng.uniform(20, 70, 3)
    return base + 20 * (xx / w)[..., None] + rng.normal(0, 4, (h, w, 1))


TABLES = ("wood", "fabric", "stone", "dark desk")


def _sheet_color(rng: np.random.Generator) -> np.ndarray:
    white = rng.uniform(200, 250)
    return np.array([white, white - rng.uniform(0, 12), white - rng.uniform(0, 25)])


def _shadow_and_cast(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = rgb.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.cos(angle) * xx + np.sin(angle) * yy
    ramp = (ramp - ramp.min()) / (np.ptp(ramp) + 1e-6)
    light = 1.0 - rng.uniform(0.1, 0.45) * ramp  # a shadow across the scene
    cast = np.array([1.0, 1.0, 1.0]) + rng.uniform(-0.12, 0.12, 3)  # warm or cold light
    return rgb * light[..., None] * cast


def photo_on_table(ink: np.ndarray, rng: np.random.Generator, table: str | None = None) -> bytes:
    """The ink written on a sheet lying on a table, photographed by a phone: the sheet turned up to
    30 degrees, seen in perspective, covering 30-95 % of the frame; shadow, color cast, JPEG 60-90."""
    import cv2

    W = int(rng.integers(700, 1100))
    H = int(W * rng.uniform(0.7, 1.35))
    table = table or TABLES[int(rng.integers(len(TABLES)))]
    scene = _texture(table, H, W, rng)
    # The sheet, flat: an A-format page with the digit somewhere in its middle.
    sw = 400
    sh = int(sw * rng.uniform(1.0, 1.42))
    sheet = np.ones((sh, sw, 3)) * _sheet_color(rng)
    glyph = fit_ink(ink, int(rng.uniform(0.3, 0.6) * sw))
    top = int(rng.integers(int(0.15 * sh), max(int(0.15 * sh) + 1, sh - glyph.shape[0] - int(0.15 * sh))))
    left = int(rng.integers(int(0.15 * sw), max(int(0.15 * sw) + 1, sw - glyph.shape[1] - int(0.15 * sw))))
    lay_ink(sheet, glyph, top, left, _pen(rng))
    # Where its corners land: a share of the frame, turned, each corner moved for perspective.
    share = rng.uniform(0.3, 0.95)
    scale = np.sqrt(share * H * W / (sw * sh))
    scale = min(scale, 0.98 * W / sw, 0.98 * H / sh) if share < 0.6 else scale
    angle = np.radians(rng.uniform(-30, 30))
    corners = np.float32([[-sw / 2, -sh / 2], [sw / 2, -sh / 2], [sw / 2, sh / 2], [-sw / 2, sh / 2]]) * scale
    rot = np.float32([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    corners = corners @ rot.T
    corners += rng.normal(0, 0.04 * scale * sw, corners.shape).astype(np.float32)  # perspective
    center = np.float32([W / 2, H / 2]) + rng.uniform(-0.12, 0.12, 2).astype(np.float32) * [W, H] * (1 - share)
    corners += center
    transform = cv2.getPerspectiveTransform(np.float32([[0, 0], [sw, 0], [sw, sh], [0, sh]]), corners.astype(np.float32))
    warped = cv2.warpPerspective(sheet.astype(np.float32), transform, (W, H))
    inside = cv2.warpPerspective(np.ones((sh, sw), np.float32), transform, (W, H))[..., None]
    rgb = scene * (1 - inside) + warped * inside
    rgb = _shadow_and_cast(rgb, rng) + rng.normal(0, 3, rgb.shape)
    rgb = cv2.GaussianBlur(rgb.astype(np.float32), (0, 0), rng.uniform(0.5, 1.2))
    return encode(rgb, JPEG, int(rng.integers(60, 91)))


def _rule(page: np.ndarray, kind: str, gap: int, offset: int, width: int, color) -> None:
    """Lines `width` pixels thick every `gap` pixels from `offset` across the page: ruled paper's
    rows, and for squared paper its columns too."""
    H, W = page.shape[:2]
    for y in range(offset, H, gap):
        page[y : y + width] = color
    if kind == "squared":
        for x in range(offset, W, gap):
            page[:, x : x + width] = color


def _photographed_page(page: np.ndarray, rng: np.random.Generator) -> bytes:
    """A page that fills the frame, photographed from above: turned a few degrees, a shadow and a
    color cast, sensor noise, JPEG 60-90."""
    import cv2

    H, W = page.shape[:2]
    rotation = cv2.getRotationMatrix2D((W / 2, H / 2), rng.uniform(-4, 4), 1.0)
    page = cv2.warpAffine(page.astype(np.float32), rotation, (W, H), borderMode=cv2.BORDER_REFLECT)
    page = _shadow_and_cast(page, rng) + rng.normal(0, 3, page.shape)
    return encode(page, JPEG, int(rng.integers(60, 91)))


def notebook(ink: np.ndarray, rng: np.random.Generator, kind: str = "ruled") -> bytes:
    """The ink on ruled or squared notebook paper photographed from above (the page fills the frame,
    turned a few degrees), JPEG."""

    side = int(rng.integers(400, 800))
    H, W = side, int(side * rng.uniform(0.8, 1.25))
    page = np.ones((H, W, 3)) * _sheet_color(rng)
    gap = int(rng.integers(18, 36))
    line = np.array([rng.uniform(120, 190), rng.uniform(150, 200), rng.uniform(190, 240)])  # light blue or grey
    offset = int(rng.integers(0, gap))
    _rule(page, kind, gap, offset, 2, line)
    if kind != "squared" and rng.random() < 0.5:  # a red margin
        x = int(0.12 * W)
        page[:, x : x + 2] = (220, 90, 90)
    glyph = fit_ink(ink, int(rng.integers(int(2.2 * gap), max(int(2.2 * gap) + 1, int(0.6 * min(H, W))))))
    top = int(rng.integers(0, max(1, H - glyph.shape[0])))
    left = int(rng.integers(int(0.15 * W), max(int(0.15 * W) + 1, W - glyph.shape[1])))
    lay_ink(page, glyph, top, left, _pen(rng))
    return _photographed_page(page, rng)


def whiteboard(ink: np.ndarray, rng: np.random.Generator) -> bytes:
    """Marker on a whiteboard: a glossy gradient, a thick colored stroke, a frame at the edge."""
    import cv2

    H, W = int(rng.integers(300, 700)), int(rng.integers(400, 900))
    board = np.ones((H, W, 3)) * rng.uniform(215, 245)
    yy, xx = np.mgrid[0:H, 0:W]
    glare = np.exp(-(((xx - rng.uniform(0, W)) / (0.3 * W)) ** 2 + ((yy - rng.uniform(0, H)) / (0.3 * H)) ** 2))
    board = board * (0.85 + 0.15 * glare[..., None])
    thick = cv2.dilate(ink.astype(np.float32), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3)))
    glyph = fit_ink(thick, int(rng.uniform(0.4, 0.8) * min(H, W)))
    marker = [(20, 20, 20), (20, 40, 180), (180, 30, 30), (20, 130, 50)][int(rng.integers(4))]
    lay_ink(board, glyph, int(rng.integers(0, H - glyph.shape[0] + 1)), int(rng.integers(0, W - glyph.shape[1] + 1)), marker)
    frame = int(rng.integers(0, 12))
    if frame:
        board[:frame], board[-frame:], board[:, :frame], board[:, -frame:] = 150, 150, 150, 150
    return encode(_shadow_and_cast(board, rng), JPEG, int(rng.integers(70, 91)))


def sticky_note(ink: np.ndarray, rng: np.random.Generator) -> bytes:
    """A colored sticky note with the digit, on a desk or a white sheet, photographed."""
    H, W = int(rng.integers(400, 800)), int(rng.integers(400, 800))
    scene = _texture(TABLES[int(rng.integers(len(TABLES)))], H, W, rng) if rng.random() < 0.5 else np.ones((H, W, 3)) * 235.0
    side = int(rng.uniform(0.45, 0.8) * min(H, W))
    note = (
        np.ones((side, side, 3)) * [(250, 235, 110), (250, 180, 200), (170, 230, 250), (190, 240, 150)][int(rng.integers(4))]
    )
    glyph = fit_ink(ink, int(rng.uniform(0.5, 0.75) * side))
    lay_ink(note, glyph, (side - glyph.shape[0]) // 2, (side - glyph.shape[1]) // 2, _pen(rng))
    top, left = int(rng.integers(0, H - side + 1)), int(rng.integers(0, W - side + 1))
    scene[top : top + side, left : left + side] = note
    return encode(_shadow_and_cast(scene, rng) + rng.normal(0, 3, scene.shape), JPEG, int(rng.integers(60, 91)))


def thick_marker(ink: np.ndarray, rng: np.random.Generator) -> bytes:
    """A digit in a thick marker or felt pen (strokes a quarter to a third of the digit's width):
    dark on paper, or light on a dark board (chalk, a white marker on black), photographed, JPEG."""
    import cv2

    side = int(rng.integers(240, 640))
    glyph = fit_ink(ink, int(rng.uniform(0.45, 0.8) * side))
    # MNIST's strokes are about a sixth of the digit; a marker's are up to twice that.
    grow = max(1, int(rng.uniform(0.03, 0.08) * max(glyph.shape)))
    glyph = cv2.dilate(glyph, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1)))
    if rng.random() < 0.5:
        page, color = np.ones((side, side, 3)) * _sheet_color(rng), _pen(rng)
    else:
        page, color = np.ones((side, side, 3)) * rng.uniform(15, 70, 3), tuple(rng.uniform(200, 250, 3))
    top = int(rng.integers(0, max(1, side - glyph.shape[0])))
    left = int(rng.integers(0, max(1, side - glyph.shape[1])))
    lay_ink(page, glyph, top, left, color)
    page = cv2.GaussianBlur(page.astype(np.float32), (0, 0), rng.uniform(0.5, 1.5))
    return encode(_shadow_and_cast(page, rng) + rng.normal(0, 4, page.shape), JPEG, int(rng.integers(60, 91)))


def small_on_lines(ink: np.ndarray, rng: np.random.Generator, kind: str = "ruled") -> bytes:
    """A small digit written on ruled or squared paper as people write in a notebook: one to two
    line gaps tall, sitting on a line (its strokes cross the lines), the page photographed from
    above, slightly turned, JPEG."""

    side = int(rng.integers(400, 800))
    H, W = side, int(side * rng.uniform(0.8, 1.25))
    page = np.ones((H, W, 3)) * _sheet_color(rng)
    gap = int(rng.integers(16, 32))
    line = np.array([rng.uniform(120, 190), rng.uniform(150, 200), rng.uniform(190, 240)])
    width = int(rng.integers(1, 3))
    offset = int(rng.integers(0, gap))
    _rule(page, kind, gap, offset, width, line)
    glyph = fit_ink(ink, int(rng.uniform(1.0, 2.0) * gap))
    rows = list(range(offset + gap, H - glyph.shape[0], gap)) or [0]
    base = rows[int(rng.integers(len(rows)))]  # the line the digit sits on (its foot near it)
    top = max(0, base - glyph.shape[0] + int(rng.integers(-3, 4)))
    left = int(rng.integers(int(0.1 * W), max(int(0.1 * W) + 1, int(0.9 * W) - glyph.shape[1])))
    lay_ink(page, glyph, top, left, _pen(rng))
    return _photographed_page(page, rng)


def low_resolution_scan(ink: np.ndarray, rng: np.random.Generator) -> bytes:
    """A digit scanned or photographed at low resolution: 16-40 pixels a side, blurred, then
    enlarged back by the sender's software (or not), grey paper, JPEG or PNG."""
    import cv2

    side = int(rng.integers(16, 41))
    page = np.ones((side, side, 3)) * _sheet_color(rng)
    glyph = fit_ink(ink, int(rng.uniform(0.6, 0.9) * side))
    lay_ink(page, glyph, (side - glyph.shape[0]) // 2, (side - glyph.shape[1]) // 2, _pen(rng))
    page = cv2.GaussianBlur(page.astype(np.float32), (0, 0), rng.uniform(0.5, 1.2))
    if rng.random() < 0.5:
        up = int(rng.integers(3, 8))
        page = cv2.resize(page, (side * up, side * up), interpolation=cv2.INTER_CUBIC)
    page = page + rng.normal(0, 3, page.shape)
    return encode(page, JPEG, int(rng.integers(50, 90))) if rng.random() < 0.5 else encode(page)


def closeup(ink: np.ndarray, rng: np.random.Generator) -> bytes:
    """The digit alone, closely framed on its paper (no sheet edge in view), JPEG."""
    side = int(rng.integers(150, 600))
    page = np.ones((side, side, 3)) * _sheet_color(rng)
    glyph = fit_ink(ink, int(rng.uniform(0.55, 0.85) * side))
    lay_ink(page, glyph, (side - glyph.shape[0]) // 2, (side - glyph.shape[1]) // 2, _pen(rng))
    return encode(_shadow_and_cast(page, rng) + rng.normal(0, 4, page.shape), JPEG, int(rng.integers(60, 91)))


def on_plain_paper(ink: np.ndarray, rng: np.random.Generator) -> bytes:
    """The ink on white, as a drawing is saved (PNG)."""
    page = np.full((ink.shape[0] + 16, ink.shape[1] + 16, 3), 255.0)
    lay_ink(page, ink, 8, 8, (0, 0, 0))
    return encode(page)


SCENES = {
    "photo on a table": photo_on_table,
    "ruled notebook": lambda ink, rng: notebook(ink, rng, "ruled"),
    "squared notebook": lambda ink, rng: notebook(ink, rng, "squared"),
    "whiteboard": whiteboard,
    "sticky note": sticky_note,
    "closeup": closeup,
    "thick marker": thick_marker,
    "small on ruled paper": lambda ink, rng: small_on_lines(ink, rng, "ruled"),
    "small on squared paper": lambda ink, rng: small_on_lines(ink, rng, "squared"),
    "low-resolution scan": low_resolution_scan,
}


# -- things that are not digits --------------------------------------------------------------------

# Letters that people write like digits are left out (O 0, I l 1, Z 2, S 5, b 6, g q 9, B 8 stays: it
# is not an 8 when written as a B).
LETTERS = "".join(c for c in string.ascii_letters if c not in "OoIlizZSsbgqGT")
SIGNS = "+-=×÷?!#%&@*/<>$€~^()[]{}"


def fonts(kind: str = "all") -> list[Path]:
    """matplotlib's TrueType fonts (DejaVu, STIX, Computer Modern) and the system's DejaVu; kind
    'train' and 'held out' split them, so that the reject threshold is chosen on unseen fonts."""
    import matplotlib

    found = sorted((Path(matplotlib.get_data_path()) / "fonts" / "ttf").glob("*.ttf"))
    found = [
        f
        for f in found
        if not f.name.startswith(("cmex", "cmsy", "STIXSiz", "STIXNonUni", "DejaVuSansDisplay", "DejaVuSerifDisplay"))
    ]
    if kind == "all":
        return found
    held = [f for i, f in enumerate(found) if i % 3 == 2]
    return held if kind == "held out" else [f for f in found if f not in held]


def text_ink(text: str, font: Path, rng: np.random.Generator, size: int = 64) -> np.ndarray | None:
    """The text rendered in the font as ink (light on dark), turned a little; None when the font
    lacks the glyph (it renders nothing)."""
    from PIL import Image, ImageDraw, ImageFont

    face = ImageFont.truetype(str(font), size)
    canvas = Image.new("L", (size * (len(text) + 2), size * 2), 0)
    ImageDraw.Draw(canvas).text((size // 2, size // 3), text, fill=255, font=face)
    canvas = canvas.rotate(float(rng.uniform(-12, 12)), resample=Image.Resampling.BICUBIC, expand=True)
    ink = np.asarray(canvas, dtype=np.float32)
    if ink.max() < 128:
        return None
    ys, xs = np.nonzero(ink > 20)
    return ink[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]


def _polyline_ink(points: np.ndarray, side: int, width: int) -> np.ndarray:
    import cv2

    canvas = np.zeros((side, side), np.uint8)
    cv2.polylines(canvas, [np.round(points * side).astype(np.int32)], False, 255, width, cv2.LINE_AA)
    return canvas.astype(np.float32)


def scribble(rng: np.random.Generator) -> np.ndarray:
    """A random tangle of strokes."""
    n = int(rng.integers(8, 25))
    steps = rng.normal(0, 0.25, (n, 2))
    points = np.clip(0.5 + np.cumsum(steps, axis=0) * 0.6, 0.05, 0.95)
    return _polyline_ink(points, 120, int(rng.integers(3, 10)))


def blob(rng: np.random.Generator) -> np.ndarray:
    """A filled irregular shape."""
    import cv2

    n = int(rng.integers(5, 12))
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    radius = rng.uniform(0.2, 0.45, n)
    points = np.stack([0.5 + radius * np.cos(angles), 0.5 + radius * np.sin(angles) * rng.uniform(0.4, 1.0)], 1)
    canvas = np.zeros((120, 120), np.uint8)
    cv2.fillPoly(canvas, [np.round(points * 120).astype(np.int32)], 255, cv2.LINE_AA)
    return canvas.astype(np.float32)


def dot(rng: np.random.Generator) -> np.ndarray:
    """A single dot (a pen touching the paper), small in a large field."""
    import cv2

    canvas = np.zeros((200, 200), np.uint8)
    r = int(rng.integers(3, 12))
    cv2.ellipse(
        canvas, (100, 100), (r, int(r * rng.uniform(0.6, 1.2))), float(rng.uniform(0, 180)), 0, 360, 255, -1, cv2.LINE_AA
    )
    return canvas.astype(np.float32)


def mark(rng: np.random.Generator) -> np.ndarray:
    """A tick, a cross, a dash, a wavy line or a circle-dot: marks people make that are not digits."""
    kind = int(rng.integers(5))
    j = lambda pts: np.asarray(pts) + rng.normal(0, 0.03, (len(pts), 2))
    w = int(rng.integers(3, 9))
    if kind == 0:
        return _polyline_ink(j([(0.2, 0.55), (0.4, 0.8), (0.85, 0.2)]), 120, w)
    if kind == 1:
        return np.maximum(
            _polyline_ink(j([(0.2, 0.2), (0.8, 0.8)]), 120, w), _polyline_ink(j([(0.8, 0.2), (0.2, 0.8)]), 120, w)
        )
    if kind == 2:
        return _polyline_ink(j([(0.1, 0.5), (0.9, 0.5)]), 120, w)
    if kind == 3:
        t = np.linspace(0.1, 0.9, 30)
        return _polyline_ink(np.stack([t, 0.5 + 0.12 * np.sin(t * rng.uniform(12, 25))], 1), 120, w)
    t = np.linspace(0, 2 * np.pi, 40)
    ring = _polyline_ink(np.stack([0.5 + 0.3 * np.cos(t), 0.5 + 0.3 * np.sin(t)], 1), 120, w)
    ring[55:65, 55:65] = 255
    return ring


def number_ink(digit_inks: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """Digits written side by side as one number ("35"), with a small gap or touching."""
    gap = int(rng.integers(-2, 8))
    height = max(d.shape[0] for d in digit_inks)
    parts = []
    for d in digit_inks:
        ys, xs = np.nonzero(d > 20)
        d = d[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1] if len(ys) else d
        d = fit_ink(d, height) if d.shape[0] < d.shape[1] else fit_ink(d, int(height * rng.uniform(0.85, 1.0)))
        pad = np.zeros((height, d.shape[1]), np.float32)
        pad[: d.shape[0]] = d[:height]
        parts.append(pad)
    out = parts[0]
    for p in parts[1:]:
        if gap >= 0:
            out = np.concatenate([out, np.zeros((height, gap), np.float32), p], axis=1)
        else:  # touching: overlap the columns
            joined = np.zeros((height, out.shape[1] + p.shape[1] + gap), np.float32)
            joined[:, : out.shape[1]] = out
            joined[:, out.shape[1] + gap :] = np.maximum(joined[:, out.shape[1] + gap :], p)
            out = joined
    return out


NON_DIGIT_KINDS = ("letter", "sign", "scribble", "blob", "dot", "mark", "number")


def non_digit_ink(
    kind: str, rng: np.random.Generator, font_list: list[Path], digits: tuple[np.ndarray, np.ndarray] | None = None
) -> np.ndarray:
    """One non-digit of the kind as ink. digits (images [N, 28, 28] and labels [N]) feed numbers."""
    if kind in ("letter", "sign"):
        chars = LETTERS if kind == "letter" else SIGNS
        while True:
            ink = text_ink(chars[int(rng.integers(len(chars)))], font_list[int(rng.integers(len(font_list)))], rng)
            if ink is not None:
                return ink
    if kind == "number":
        images = digits[0]
        count = 2 if rng.random() < 0.8 else 3
        return number_ink([images[int(i)].astype(np.float32) for i in rng.integers(0, len(images), count)], rng)
    return {"scribble": scribble, "blob": blob, "dot": dot, "mark": mark}[kind](rng)


# ---------------------------------------------------------------- digit images drawn directly
# Sources of the robustness benchmark and the tests (each with draws of its own): simple cases of
# an MNIST digit as people save it (render), digits typeset in matplotlib's fonts, digits drawn as
# pen strokes, large or small on the page's pad, and non-digit images of every kind.

CASES = ("thick", "thin", "small on large canvas", "noisy uneven paper", "colored ink", "photo with margins", "transparent")


def _ink(digit: np.ndarray, side: int) -> Image.Image:
    """The 28x28 digit (ink 0..255) scaled to side x side, smooth."""
    return Image.fromarray(digit.astype(np.uint8)).resize((side, side), Image.Resampling.BICUBIC)


def render(digit: np.ndarray, case: str, rng: np.random.Generator) -> bytes:
    """One digit image as PNG (or JPEG for photos) bytes."""
    fmt = "PNG"
    if case == "thick":
        ink = _ink(digit, 112).filter(ImageFilter.MaxFilter(9))
        img = Image.fromarray(255 - np.asarray(ink))
    elif case == "thin":
        ink = _ink(digit, 200).point(lambda v: 255 if v > 128 else 0).filter(ImageFilter.MinFilter(9))
        img = Image.fromarray(255 - np.asarray(ink))
    elif case == "small on large canvas":
        canvas = np.full((900, 1200), 250, np.uint8)
        size = int(rng.integers(30, 60))
        y, x = int(rng.integers(50, 800)), int(rng.integers(50, 1100))
        canvas[y : y + size, x : x + size] = 255 - np.asarray(_ink(digit, size))
        img = Image.fromarray(canvas)
    elif case == "noisy uneven paper":
        h = w = 160
        yy, xx = np.mgrid[0:h, 0:w] / h
        light = 130 + 110 * (0.5 * xx + 0.5 * yy)  # a shadow across the sheet
        paper = np.repeat((light + rng.normal(0, 12, (h, w)))[..., None], 3, -1)
        ink = np.asarray(_ink(digit, 120), dtype=np.float64)
        full = np.zeros((h, w))
        full[20:140, 20:140] = ink
        lay_ink(paper, full, 0, 0, (30, 30, 40))
        img = Image.fromarray(np.clip(paper, 0, 255).astype(np.uint8))
    elif case == "colored ink":
        colors = [((20, 60, 200), (255, 255, 255)), ((200, 30, 30), (250, 250, 240)), ((20, 140, 40), (250, 245, 200))]
        ink_color, paper_color = colors[int(rng.integers(len(colors)))]
        paper = np.ones((100, 100, 3)) * np.asarray(paper_color, dtype=np.float64)
        full = np.zeros((100, 100))
        full[10:90, 10:90] = np.asarray(_ink(digit, 80), dtype=np.float64)
        lay_ink(paper, full, 0, 0, ink_color)
        img = Image.fromarray(np.clip(paper, 0, 255).astype(np.uint8))
    elif case == "photo with margins":
        h, w = 300, 400
        photo = np.full((h, w, 3), 60.0)  # a dark table around the sheet
        top, left = int(rng.integers(20, 60)), int(rng.integers(40, 120))
        sheet = np.full((200, 220, 3), 225.0)
        full = np.zeros((200, 220))
        full[40:160, 50:170] = np.asarray(_ink(digit, 120), dtype=np.float64)
        lay_ink(sheet, full, 0, 0, (40, 40, 50))
        photo[top : top + 200, left : left + 220] = sheet
        photo += rng.normal(0, 6, photo.shape)
        img = Image.fromarray(np.clip(photo, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(1.2))
        fmt = "JPEG"
    elif case == "transparent":
        ink = np.asarray(_ink(digit, 96))
        rgba = np.zeros((96, 96, 4), np.uint8)
        rgba[..., 3] = ink
        img = Image.fromarray(rgba, mode="RGBA")
    else:
        raise ValueError(f"unknown case {case!r}; valid: {', '.join(CASES)}")
    return encode_image(img, fmt, **({"quality": 70} if fmt == JPEG else {}))


# One stroke path per digit in a unit box (x right, y down); pen strokes jitter these points.
STROKES = {
    0: [[(0.5, 0.05), (0.2, 0.2), (0.15, 0.5), (0.2, 0.8), (0.5, 0.95), (0.8, 0.8), (0.85, 0.5), (0.8, 0.2), (0.5, 0.05)]],
    1: [[(0.35, 0.2), (0.55, 0.05), (0.55, 0.95)]],
    2: [[(0.2, 0.25), (0.4, 0.07), (0.7, 0.1), (0.8, 0.3), (0.6, 0.55), (0.2, 0.92), (0.85, 0.92)]],
    3: [[(0.2, 0.12), (0.6, 0.05), (0.8, 0.25), (0.5, 0.48), (0.8, 0.7), (0.6, 0.95), (0.2, 0.88)]],
    4: [[(0.65, 0.95), (0.65, 0.05), (0.15, 0.65), (0.9, 0.65)]],
    5: [[(0.8, 0.07), (0.3, 0.07), (0.25, 0.45), (0.6, 0.4), (0.82, 0.65), (0.6, 0.93), (0.2, 0.88)]],
    6: [[(0.75, 0.08), (0.4, 0.2), (0.2, 0.6), (0.35, 0.92), (0.7, 0.88), (0.78, 0.62), (0.5, 0.48), (0.22, 0.62)]],
    7: [[(0.15, 0.08), (0.85, 0.08), (0.45, 0.95)]],
    8: [
        [(0.5, 0.48), (0.25, 0.3), (0.5, 0.05), (0.75, 0.3), (0.5, 0.48)],
        [(0.5, 0.48), (0.2, 0.72), (0.5, 0.95), (0.8, 0.72), (0.5, 0.48)],
    ],
    9: [[(0.78, 0.35), (0.5, 0.5), (0.22, 0.32), (0.45, 0.06), (0.78, 0.2), (0.75, 0.6), (0.6, 0.95)]],
}


def typeset(rng: np.random.Generator) -> list[tuple[bytes, int]]:
    """Every digit typeset in Matplotlib's fonts, each as an encoded image and its class."""
    import matplotlib

    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    fonts = [f for f in sorted(folder.glob("*.ttf")) if f.name.startswith(("DejaVu", "STIXGeneral", "cmr", "cmss", "cmtt"))]
    images = []
    for font_path in fonts:
        for digit in range(10):
            for _ in range(3):
                size = int(rng.integers(30, 90))
                font = ImageFont.truetype(str(font_path), size)
                canvas = Image.new("L", (size * 2, size * 2), 255)
                draw = ImageDraw.Draw(canvas)
                x, y = rng.integers(size // 4, size // 2, 2)
                draw.text((int(x), int(y)), str(digit), fill=int(rng.integers(0, 60)), font=font)
                canvas = canvas.rotate(float(rng.uniform(-8, 8)), fillcolor=255, resample=Image.Resampling.BICUBIC)
                if canvas.getextrema()[0] > 200:  # the font has no glyph for the digit (some of matplotlib's do not)
                    continue
                if rng.random() < 1 / 3:
                    images.append((encode_image(canvas, "JPEG", quality=int(rng.integers(40, 80))), digit))
                else:
                    images.append((encode_image(canvas), digit))
    return images


def _trembled(path, rng: np.random.Generator):
    """The points of a stroke path (unit box) as a hand draws them: each moved by a tremor of
    normal noise, 0.03 of the box in x, then in y; yields (x, y, the point's own y)."""
    for px, py in path:
        jx, jy = rng.normal(0, 0.03, 2)
        yield px + jx, py + jy, py


def pen_strokes(rng: np.random.Generator, per_digit: int = 40) -> list[tuple[bytes, int]]:
    """Digits drawn as pen strokes (per_digit of each class), each as an encoded image and its class."""
    images = []
    for digit, paths in STROKES.items():
        for _ in range(per_digit):
            side = int(rng.integers(80, 200))
            canvas = Image.new("L", (side, side), 255)
            draw = ImageDraw.Draw(canvas)
            width = int(rng.integers(max(2, side // 40), side // 10))
            slant = rng.uniform(-0.15, 0.15)
            for path in paths:
                points = [
                    ((0.15 + 0.7 * (x + slant * (0.5 - py))) * side, (0.1 + 0.8 * y) * side)
                    for x, y, py in _trembled(path, rng)
                ]
                draw.line(points, fill=0, width=width, joint="curve")
            images.append((encode_image(canvas), digit))
    return images


def small_drawings(rng: np.random.Generator, per_digit: int = 20) -> list[tuple[bytes, int]]:
    """Digits drawn small on the page's pad: 280x280, an 18 px round pen, the digit 20-35 % of the pad."""
    images = []
    for digit, paths in STROKES.items():
        for _ in range(per_digit):
            canvas = Image.new("L", (280, 280), 255)
            draw = ImageDraw.Draw(canvas)
            size = rng.uniform(0.2, 0.35) * 280
            x0, y0 = rng.uniform(10, 270 - size, 2)
            for path in paths:
                points = [(x0 + size * x * 0.8, y0 + size * y) for x, y, _ in _trembled(path, rng)]
                draw.line(points, fill=0, width=18, joint="curve")
            images.append((encode_image(canvas), digit))
    return images


# Letters and signs as pen strokes (unit box, x right, y down): an alphabet of this benchmark's own.
STROKE_CHARS = {
    "A": [[(0.1, 0.95), (0.5, 0.05), (0.9, 0.95)], [(0.28, 0.6), (0.72, 0.6)]],
    "B": [[(0.2, 0.95), (0.2, 0.05), (0.65, 0.1), (0.7, 0.3), (0.2, 0.48), (0.75, 0.6), (0.75, 0.85), (0.2, 0.95)]],
    "C": [[(0.8, 0.15), (0.5, 0.05), (0.2, 0.3), (0.2, 0.7), (0.5, 0.95), (0.8, 0.85)]],
    "E": [[(0.8, 0.05), (0.2, 0.05), (0.2, 0.95), (0.8, 0.95)], [(0.2, 0.5), (0.65, 0.5)]],
    "F": [[(0.8, 0.05), (0.2, 0.05), (0.2, 0.95)], [(0.2, 0.5), (0.65, 0.5)]],
    "H": [[(0.2, 0.05), (0.2, 0.95)], [(0.8, 0.05), (0.8, 0.95)], [(0.2, 0.5), (0.8, 0.5)]],
    "K": [[(0.2, 0.05), (0.2, 0.95)], [(0.8, 0.05), (0.2, 0.55), (0.8, 0.95)]],
    "M": [[(0.1, 0.95), (0.15, 0.05), (0.5, 0.6), (0.85, 0.05), (0.9, 0.95)]],
    "N": [[(0.2, 0.95), (0.2, 0.05), (0.8, 0.95), (0.8, 0.05)]],
    "P": [[(0.2, 0.95), (0.2, 0.05), (0.7, 0.1), (0.75, 0.35), (0.2, 0.5)]],
    "R": [[(0.2, 0.95), (0.2, 0.05), (0.7, 0.1), (0.75, 0.35), (0.2, 0.5), (0.8, 0.95)]],
    "W": [[(0.05, 0.05), (0.25, 0.95), (0.5, 0.4), (0.75, 0.95), (0.95, 0.05)]],
    "X": [[(0.15, 0.05), (0.85, 0.95)], [(0.85, 0.05), (0.15, 0.95)]],
    "Y": [[(0.15, 0.05), (0.5, 0.5), (0.85, 0.05)], [(0.5, 0.5), (0.5, 0.95)]],
    "+": [[(0.5, 0.15), (0.5, 0.85)], [(0.15, 0.5), (0.85, 0.5)]],
    "=": [[(0.15, 0.35), (0.85, 0.35)], [(0.15, 0.65), (0.85, 0.65)]],
    "?": [[(0.2, 0.25), (0.5, 0.05), (0.8, 0.25), (0.5, 0.5), (0.5, 0.7)], [(0.5, 0.9), (0.5, 0.95)]],
    "#": [[(0.35, 0.05), (0.3, 0.95)], [(0.7, 0.05), (0.65, 0.95)], [(0.1, 0.35), (0.9, 0.35)], [(0.1, 0.65), (0.9, 0.65)]],
    "&": [[(0.85, 0.95), (0.25, 0.35), (0.4, 0.05), (0.6, 0.2), (0.2, 0.65), (0.4, 0.95), (0.8, 0.6)]],
}


def _stroke_ink(paths, rng: np.random.Generator, side: int = 120) -> np.ndarray:
    canvas = Image.new("L", (side, side), 0)
    draw = ImageDraw.Draw(canvas)
    width = int(rng.integers(4, 12))
    for path in paths:
        points = [((0.1 + 0.8 * x) * side, (0.1 + 0.8 * y) * side) for x, y, _ in _trembled(path, rng)]
        draw.line(points, fill=255, width=width, joint="curve")
    return np.asarray(canvas, dtype=np.float32)


def non_digit_images(rng: np.random.Generator, count: int = 700) -> list[tuple[bytes, str]]:
    """Non-digits as people send them, each with its kind, on white paper or photographed."""
    from ..core.data import load_mnist

    test = load_mnist("test")
    chars = list(STROKE_CHARS)
    makers = {
        "letter or sign": lambda: _stroke_ink(STROKE_CHARS[chars[int(rng.integers(len(chars)))]], rng),
        "mark": lambda: mark(rng),
        "scribble": lambda: scribble(rng),
        "dot": lambda: dot(rng),
        "blob": lambda: blob(rng),
        "number": lambda: number_ink(
            [test.images[int(i)].astype(np.float32) for i in rng.integers(0, 10000, int(rng.integers(2, 4)))], rng
        ),
        "photo with no digit": lambda: np.zeros((28, 28), np.float32),
    }
    images = []
    for k in range(count):
        kind = list(makers)[k % len(makers)]
        ink = makers[kind]()
        photo = kind == "photo with no digit" or rng.random() < 0.3
        images.append((photo_on_table(ink, rng) if photo else on_plain_paper(ink, rng), kind))
    return images
