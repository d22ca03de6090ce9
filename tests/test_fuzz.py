"""Property-based tests (Hypothesis) of every boundary that takes outside input: the command line's
numbers, checkpoint metadata, .npy contents and image headers. The property everywhere: exit 2
with one line on stderr, or a valid answer (strict JSON, finite numbers); never a traceback, a
hang or a NaN. Each property runs a few dozen examples, a few seconds in all."""

import json
import math
import struct
import zlib
from dataclasses import fields

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from digitcmp.cli import build_parser, main, run_config_from_args
from digitcmp.core.checkpoint import save_checkpoint
from digitcmp.core.config import RunConfig
from digitcmp.core.settings import check_field
from digitcmp.core.train import train_run

pytestmark = pytest.mark.slow  # Hypothesis properties: outside the fast tier (pytest -m "not slow")

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
NUMERIC = [f for f in fields(RunConfig) if type(f.default) in (int, float) or f.name == "lr"]


def strict_json(text: str):
    return json.loads(text, parse_constant=lambda c: pytest.fail(f"not JSON: {c}"))


def assert_one_line_or_answer(code: int, out: str, err: str) -> None:
    assert "Traceback" not in err, err
    if code == 2:
        assert err.count("\n") == 1 and err.startswith("digitcmp"), err
        return
    assert code == 0, (code, err)
    records = strict_json(out)
    for r in records:
        assert 0 <= r["p_le"] <= 1 and math.isfinite(r["p_le"])
        assert all(math.isfinite(p) for row in r.get("digit_probs", []) for p in row)


def number_texts():
    return st.one_of(
        st.integers(-(10**15), 10**15).map(str),
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
        st.sampled_from(["nan", "inf", "-inf", "1e400", "-0", "0x10", "1_000", "", " ", "½", "1e-400", "3.5e2"]),
        st.text(max_size=8),
    )


@FAST
@given(field=st.sampled_from(NUMERIC), text=number_texts())
def test_cli_numbers_are_refused_in_one_line_or_make_a_valid_config(field, text):
    """Any text for any numeric flag: a one-line usage error, or a config whose every field is in range."""
    from digitcmp.cli import UsageError

    flag = "--" + field.name.replace("_", "-")
    try:
        args = build_parser().parse_args(["train", f"{flag}={text}"])
        config = run_config_from_args(args)
    except UsageError as err:
        assert "\n" not in str(err) and flag in str(err)
        return
    except ValueError as err:  # a range that depends on several fields (e.g. pairs and validation)
        assert "\n" not in str(err)
        return
    for f in fields(RunConfig):
        check_field(f, getattr(config, f.name))  # raises if anything slipped through


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    lr=st.one_of(st.floats(1e-6, 10).map(repr), number_texts()),  # half in range, half anything
    aux=st.floats(0, 100).map(repr),
    momentum=st.floats(0, 0.999).map(repr),
    smoothing=st.floats(0, 0.99).map(repr),
)
def test_tiny_trainings_with_fuzzed_numbers_answer_in_json_or_refuse(capsys, lr, aux, momentum, smoothing):
    """Extreme but allowed rates and weights train (diverging, maybe) and print strict JSON."""
    argv = ["train", "--arch", "fnn", "--pairs", "20", "--test-pairs", "10", "--epochs", "2", "--json"]
    argv += [f"--lr={lr}", f"--aux-weight={aux}", f"--momentum={momentum}", f"--label-smoothing={smoothing}"]
    code = main(argv)
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    if code == 2:
        assert err.count("\n") == 1
        return
    record = strict_json(out.strip().splitlines()[-1])
    assert 0 <= record["test_error"] <= 1 and 0 <= record["train_error"] <= 1


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    config = RunConfig(arch="siamese_cnn", aux_weight=1.0, epochs=1, pairs=40, test_pairs=10, batch_size=20, tta=2)
    result, model, data = train_run(config, 0)
    path = tmp_path_factory.mktemp("fuzz") / "m.safetensors"
    save_checkpoint(path, model.state_dict(), config, data.mean, data.std, result)
    pair = tmp_path_factory.mktemp("fuzz") / "pair.npy"
    np.save(pair, data.eval_x[:3].numpy())
    return path, pair


def _json_values():
    return st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**70), 2**70),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=10),
        st.lists(st.integers(-5, 10**10), max_size=3),
    )


@FAST
@given(
    config_changes=st.dictionaries(
        st.sampled_from([f.name for f in fields(RunConfig)] + ["bogus"]), _json_values(), max_size=3
    ),
    metadata_changes=st.dictionaries(
        st.sampled_from(["input_mean", "input_std", "seed", "format", "config"]), st.text(max_size=12), max_size=2
    ),
)
def test_checkpoint_metadata_fuzz(checkpoint, tmp_path_factory, capsys, config_changes, metadata_changes):
    from safetensors import safe_open
    from safetensors.torch import save_file

    path, pair = checkpoint
    with safe_open(str(path), framework="pt") as handle:
        metadata = dict(handle.metadata())
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    config = json.loads(metadata["config"])
    config.update(config_changes)
    metadata["config"] = json.dumps(config)  # Python's json writes NaN/Infinity: a hostile file may too
    metadata.update(metadata_changes)
    bad = tmp_path_factory.mktemp("bad") / "bad.safetensors"
    save_file(tensors, str(bad), metadata=metadata)
    code = main(["predict", "--model", str(bad), str(pair), "--json"])
    out, err = capsys.readouterr()
    assert_one_line_or_answer(code, out, err)


@FAST
@given(
    array=hnp.arrays(
        dtype=st.one_of(
            hnp.scalar_dtypes(),
            hnp.unicode_string_dtypes(max_len=3),
            st.just(np.dtype([("a", "f4"), ("b", "u1")])),
        ),
        shape=st.sampled_from([(1, 2, 14, 14), (2, 14, 14), (3, 2, 14, 14), (0, 2, 14, 14), (2, 2, 14), (14, 14), ()]),
    )
)
def test_npy_contents_fuzz(checkpoint, tmp_path_factory, capsys, array):
    path, _ = checkpoint
    target = tmp_path_factory.mktemp("npy") / "x.npy"
    np.save(target, array, allow_pickle=False)
    code = main(["predict", "--model", str(path), str(target), "--json"])
    out, err = capsys.readouterr()
    assert_one_line_or_answer(code, out, err)


def _png(width: int, height: int, bit_depth: int, color: int, payload: bytes) -> bytes:
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(payload)) + chunk(b"IEND", b"")


@FAST
@given(
    width=st.integers(0, 2**31 - 1),
    height=st.integers(0, 2**31 - 1),
    bit_depth=st.sampled_from([1, 2, 4, 8, 16, 3]),
    color=st.sampled_from([0, 2, 3, 4, 6, 5]),
    payload=st.binary(max_size=300),
    small=st.booleans(),
)
def test_image_headers_fuzz(checkpoint, tmp_path_factory, capsys, width, height, bit_depth, color, payload, small):
    if small:  # small real sizes too, where the pixel data gets decoded
        width, height = width % 64, height % 64
    path, _ = checkpoint
    folder = tmp_path_factory.mktemp("img")
    (folder / "a.png").write_bytes(_png(width, height, bit_depth, color, payload))
    from PIL import Image

    Image.fromarray(np.pad(np.full((10, 4), 255, np.uint8), 9)).save(folder / "b.png")
    code = main(["predict", "--model", str(path), str(folder / "a.png"), str(folder / "b.png"), "--json"])
    out, err = capsys.readouterr()
    assert_one_line_or_answer(code, out, err)
