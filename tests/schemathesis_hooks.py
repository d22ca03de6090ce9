"""Loaded by Schemathesis (SCHEMATHESIS_HOOKS) in the API contract test: the image parts the schema
declares as binary (encoding image/*) are generated as images, of any size, mode and content;
JSON Schema cannot say "the bytes of an image", so without this a fuzzer's random bytes would
count as valid images."""

import io

import numpy as np
import schemathesis
from hypothesis import strategies as st
from PIL import Image


@st.composite
def image_files(draw) -> bytes:
    width, height = draw(st.integers(1, 120)), draw(st.integers(1, 120))
    mode = draw(st.sampled_from(["L", "RGB", "RGBA", "1", "P"]))
    seed = draw(st.integers(0, 2**32 - 1))
    kind = draw(st.sampled_from(["noise", "blank", "bar"]))
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    if kind == "blank":
        pixels[:] = pixels[0, 0]
    elif kind == "bar":
        pixels[:] = 255
        pixels[height // 4 : 3 * height // 4 + 1, width // 2 : width // 2 + max(1, width // 8)] = 0
    image = Image.fromarray(pixels).convert(mode)
    formats = {"L": ["PNG", "JPEG", "BMP", "WEBP"], "RGB": ["PNG", "JPEG", "BMP", "WEBP"], "RGBA": ["PNG", "WEBP"]}
    out = io.BytesIO()
    image.save(out, format=draw(st.sampled_from(formats.get(mode, ["PNG", "BMP", "GIF"]))))
    return out.getvalue()


schemathesis.openapi.format("binary", image_files())
