"""The API's records as OpenAPI describes them (`digitcmp serve`, server.py): a pair's answer, derived
from prediction.Prediction, a batch's answers, the health record, an error; and the request body
of /api/compare, which FastAPI cannot infer (multipart images, or a JSON batch)."""

from __future__ import annotations

import numpy as np

from .limits import MAX_BATCH_PAIRS, UPLOAD_MAX_PIXELS
from .predict import Predictor
from .prediction import Prediction

try:
    from pydantic import BaseModel, Field, create_model
except ImportError as err:  # the optional extra is missing
    raise ImportError(f"digitcmp serve needs the serve extra ({err.name} is missing): pip install -e '.[serve]'") from None

# What only the API answers beside a Prediction: the views the model saw and the regions read.
API_ONLY = {
    "views": (list[list[list[int]]] | None, Field(None, description="The two 14x14 inputs the model saw, 0..255.")),
    "regions": (
        list[list[list[float]]] | None,
        Field(
            None,
            description="Per image, the four corners (x, y) of the region that was read, as fractions of the image's "
            "width and height (multipart answers only).",
        ),
    ),
}


def _answer_model() -> type[BaseModel]:
    """One pair's answer as the API sends it: the Prediction's fields and descriptions (but the
    input's label, which a request does not name), then API_ONLY."""
    import dataclasses
    import typing

    from .prediction import Prediction

    types = typing.get_type_hints(Prediction)
    fields = {
        f.name: (
            types[f.name],
            Field(... if f.default is dataclasses.MISSING else f.default, description=f.metadata["description"]),
        )
        for f in dataclasses.fields(Prediction)
        if f.name != "input"
    }
    return create_model("Answer", __doc__="One pair's answer.", **fields, **API_ONLY)


Answer = _answer_model()


class BatchAnswer(BaseModel):
    answers: list[Answer]


class Health(BaseModel):
    model: str
    arch: str
    test_time_views: int
    metrics: dict[str, float]
    version: str
    report: bool


class Error(BaseModel):
    error: str


def answer_record(record: Prediction, views: np.ndarray | None = None, regions: list | None = None) -> dict:
    """A prediction as the API answers it (with the views the model saw and the digits' regions, for images)."""
    out = {name: getattr(record, name) for name in Answer.model_fields if name not in API_ONLY}
    if views is not None:  # the two 14x14 inputs the model saw, as 0..255 integers
        out["views"] = np.clip(np.rint(views), 0, 255).astype(np.int64).tolist()
    if regions is not None:
        out["regions"] = regions
    return out


def health_record(predictor: Predictor, model_name: str, report: bool) -> dict:
    """What /api/health answers: the model served, its recorded errors, the version."""
    from ..common.version import __version__

    return {
        "model": model_name,
        "arch": predictor.config.get("arch"),
        "test_time_views": predictor.views,
        "metrics": predictor.recorded_errors,
        "version": __version__,
        "report": report,
    }


PIXEL = {"type": "number", "minimum": 0, "maximum": 255}
IMAGE_PART = (
    f"an image file (PNG, JPEG, WebP, ... up to {UPLOAD_MAX_PIXELS // 1_000_000} megapixels) of one digit; "
    "bytes that are not an image get 400"
)


def _array_of(item: dict, n: int) -> dict:
    return {"type": "array", "items": item, "minItems": n, "maxItems": n}


OPENAPI_COMPARE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["a", "b"],
                    "properties": {
                        "a": {"type": "string", "format": "binary", "minLength": 1, "description": IMAGE_PART},
                        "b": {"type": "string", "format": "binary", "minLength": 1, "description": IMAGE_PART},
                    },
                    "additionalProperties": False,
                },
                "encoding": {"a": {"contentType": "image/*"}, "b": {"contentType": "image/*"}},
            },
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["pairs"],
                    "properties": {
                        "pairs": {
                            "type": "array",
                            "description": f"1 to {MAX_BATCH_PAIRS} pairs [2][14][14] of pixel values 0..255 "
                            "(light digit on a dark background, like MNIST)",
                            "minItems": 1,
                            "maxItems": MAX_BATCH_PAIRS,
                            "items": _array_of(_array_of(_array_of(PIXEL, 14), 14), 2),
                        }
                    },
                }
            },
        },
    }
}
