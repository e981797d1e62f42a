"""Every pattern is checked where it enters, and any pattern file (ours, .npy/.npz, pictures) is read under a
declared scale and a stated size rule (issue 21 cases 1, 4, 14; issue 23 item 3). In-process, small arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FAST, run_app
from PIL import Image

from dominant_patterns.analysis.artifacts import pattern_to_uint8
from dominant_patterns.core.pattern_files import PatternError, check_pattern, read_pattern_file, save_pattern

XI = 10 / 255
STD = (0.25, 0.25, 0.25)


def ours(tmp_path: Path, delta: object, **meta: object) -> Path:
    path = tmp_path / "pattern.pt"
    torch.save({"delta": delta, "xi": XI, "model": "tiny", **meta}, path)
    return path


def read(path: Path, **kwargs: object):  # noqa: ANN201
    return read_pattern_file(path, size=32, std=STD, **kwargs)  # type: ignore[arg-type]


def sign_pattern(xi: float = XI, size: int = 32) -> torch.Tensor:
    return (torch.randint(0, 2, (3, size, size), generator=torch.Generator().manual_seed(0)).float() * 2 - 1) * xi


# -- our pattern.pt -------------------------------------------------------------------------------


def test_our_pattern_reads_back_with_its_budget(tmp_path: Path) -> None:
    delta = sign_pattern()
    save_pattern(tmp_path / "pattern.pt", delta, {"xi": XI, "model": "tiny"})
    got = read(tmp_path / "pattern.pt")
    assert torch.equal(got.delta, delta) and got.xi == XI and got.meta["model"] == "tiny"
    assert got.source["format"] == "pt" and got.source["fit"] == "none" and len(got.source["sha256"]) == 64
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize(("delta", "xi", "message"), [
    (torch.where(torch.arange(3 * 32 * 32).view(3, 32, 32) == 5, float("nan"), 0.01), XI,
     "1 of 3072 values are NaN or infinite"),  # case 1
    (sign_pattern(5 * XI), XI, "l_inf = 50.000/255 exceeds its budget xi = 10.000/255"),  # case 4
    (sign_pattern(), -XI, "its budget xi=-0.0392"),  # case 4: a negative budget
    (sign_pattern(), "ten", "its budget xi='ten' is not a number"),  # case 14
    (sign_pattern().tolist(), XI, "holds 'delta' as a list, not a tensor"),  # case 14
    (sign_pattern()[0], XI, "shape (32, 32) is 2-D; a pattern is [3, H, W]"),  # case 14: 2-D
    (sign_pattern()[:1], XI, "1 channel(s) (shape (1, 32, 32)); a pattern has 3"),  # case 14: 1 channel
])
def test_bad_patterns_are_refused_with_one_line(tmp_path: Path, delta: object, xi: object, message: str) -> None:
    path = ours(tmp_path, delta, xi=xi)
    with pytest.raises(PatternError) as err:
        read(path)
    text = str(err.value)
    assert message in text and str(path) in text and "\n" not in text


def test_a_random_file_is_refused_without_unpickling_advice(tmp_path: Path) -> None:
    path = tmp_path / "pattern.pt"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(PatternError) as err:
        read(path)
    assert "not a readable pattern file" in str(err.value)
    assert "weights_only=False" not in str(err.value) and "likely succeed" not in str(err.value)


def test_a_pickled_object_is_refused_without_unpickling_advice(tmp_path: Path) -> None:
    path = tmp_path / "pattern.pt"
    torch.save({"delta": sign_pattern(), "extra": Path("x")}, path)  # a Path needs arbitrary unpickling
    with pytest.raises(PatternError) as err:
        read(path)
    assert "arbitrary unpickling" in str(err.value) and "likely succeed" not in str(err.value)


def test_fit_results_are_checked_too() -> None:
    with pytest.raises(PatternError, match="the uap fit's pattern: l_inf"):
        check_pattern(sign_pattern(2 * XI), source="the uap fit's pattern", xi=XI)
    assert torch.equal(check_pattern(sign_pattern()[None], source="x", xi=XI), sign_pattern())


# -- other people's files --------------------------------------------------------------------------


@pytest.mark.parametrize(("values", "suffix", "scale"), [
    (sign_pattern().numpy(), ".npy", "unit"),  # TRM-UAP's format: float32 in [-xi, xi]
    (sign_pattern().numpy()[None], ".npy", "unit"),  # (1, 3, H, W)
    (np.moveaxis(sign_pattern().numpy(), 0, -1), ".npy", "unit"),  # HWC
    (sign_pattern().numpy() * 255, ".npz", "255"),
    (sign_pattern().numpy() * 2, ".npy", "pm1"),
    (sign_pattern().numpy() / 0.25, ".npy", "normalized"),
])
def test_arrays_under_each_scale_give_the_same_pattern(tmp_path: Path, values: np.ndarray, suffix: str,
                                                        scale: str) -> None:
    path = tmp_path / f"uap{suffix}"
    (np.savez(path, uap=values) if suffix == ".npz" else np.save(path, values))
    got = read(path, scale=scale)
    assert torch.allclose(got.delta, sign_pattern(), atol=1e-6)
    assert got.xi == pytest.approx(XI, rel=1e-6)  # no declared budget: the measured l_inf
    assert got.source["scale"] == scale and got.source["format"] == suffix[1:]


def test_a_picture_of_our_pattern_reads_back_within_8_bit_rounding(tmp_path: Path) -> None:
    delta = torch.linspace(-XI, XI, 3 * 32 * 32).view(3, 32, 32)
    Image.fromarray(pattern_to_uint8(delta, XI)).save(tmp_path / "pattern.png")
    got = read(tmp_path / "pattern.png", scale="picture", xi=XI)
    assert (got.delta - delta).abs().max() <= XI / 255 + 1e-7 and got.xi == XI
    with pytest.raises(PatternError, match="needs pattern_xi"):
        read(tmp_path / "pattern.png", scale="picture")


@pytest.mark.parametrize(("values", "scale", "message"), [
    (sign_pattern().numpy() * 255, "unit", "contradict pattern_scale=unit"),
    (sign_pattern().numpy(), "255", "contradict pattern_scale=255"),
    (sign_pattern().numpy() * 255, "pm1", "contradict pattern_scale=pm1"),
    (sign_pattern().numpy(), "auto", "say how its values are scaled with pattern_scale"),
    (np.full((3, 32, 32), np.nan, dtype=np.float32), "unit", "3072 of 3072 values are NaN"),
    (sign_pattern().numpy()[0], "unit", "is 2-D; a pattern is [3, H, W]"),
    (sign_pattern().numpy()[:2], "unit", "2 channel(s)"),
    (np.zeros((2, 3, 32, 32), dtype=np.float32), "unit", "is 4-D"),
    (np.array(["a", "b"]), "unit", "is not numeric"),
])
def test_bad_arrays_are_refused_with_one_line(tmp_path: Path, values: np.ndarray, scale: str, message: str) -> None:
    path = tmp_path / "uap.npy"
    np.save(path, values)
    with pytest.raises(PatternError) as err:
        read(path, scale=scale)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_declared_budget_is_checked(tmp_path: Path) -> None:
    np.save(tmp_path / "uap.npy", sign_pattern(16 / 255).numpy())
    with pytest.raises(PatternError, match="16.000/255 exceeds its budget xi = 10.000/255"):
        read(tmp_path / "uap.npy", scale="unit", xi=XI)
    assert read(tmp_path / "uap.npy", scale="unit", xi=16 / 255).xi == 16 / 255


@pytest.mark.parametrize(("rule", "size", "expected"), [
    ("resize", 64, None), ("crop", 64, slice(16, 48)), ("tile", 8, None), ("resize", 32, slice(0, 32)),
])
def test_size_rules(tmp_path: Path, rule: str, size: int, expected: slice | None) -> None:
    big = sign_pattern(size=size)
    np.save(tmp_path / "uap.npy", big.numpy())
    got = read(tmp_path / "uap.npy", scale="unit", fit=rule)
    assert got.delta.shape == (3, 32, 32) and float(got.delta.abs().max()) <= XI * (1 + 1e-6)
    if expected is not None:
        assert torch.equal(got.delta, big[:, expected, expected])
    if rule == "tile":
        assert torch.equal(got.delta[:, :8, :8], big) and torch.equal(got.delta[:, 8:16, 8:16], big)
    assert got.source["fit"] == (rule if size != 32 else "none") and got.source["shape"] == [3, size, size]


def test_size_rules_refuse_what_they_cannot_do(tmp_path: Path) -> None:
    np.save(tmp_path / "uap.npy", sign_pattern(size=16).numpy())
    with pytest.raises(PatternError, match="smaller than the model's 32x32"):
        read(tmp_path / "uap.npy", scale="unit", fit="crop")
    with pytest.raises(PatternError, match="pattern_fit=exact"):
        read(tmp_path / "uap.npy", scale="unit", fit="exact")


# -- through the app ----------------------------------------------------------------------------------


def test_evaluate_refuses_a_nan_pattern_in_one_line(tmp_path: Path) -> None:
    delta = sign_pattern()
    delta[1, 3, 4] = float("nan")
    path = ours(tmp_path, delta)
    proc = run_app(tmp_path, *FAST, f"pattern={path}", module="dominant_patterns.evaluate")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"error: pattern={path}: 1 of 3072 values are NaN or infinite" in proc.stderr
    assert "Traceback" not in proc.stderr and not list((tmp_path / "outputs").rglob("metrics.json"))


def test_evaluate_scores_an_external_array_and_records_its_source(tmp_path: Path) -> None:
    np.save(tmp_path / "uap_tiny.npy", sign_pattern(size=40).numpy()[None] * 255)
    proc = run_app(tmp_path, *FAST, f"pattern={tmp_path / 'uap_tiny.npy'}", "pattern_scale=255",
                   "pattern_xi=0.0392156862745098", "pattern_fit=crop", "floors=true",
                   module="dominant_patterns.evaluate")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "pattern uap_tiny.npy on tiny / synthetic: fooling" in proc.stdout
    (record_path,) = (tmp_path / "outputs").rglob("metrics.json")
    import json

    record = json.loads(record_path.read_text())
    source = record["pattern_source"]
    assert source["format"] == "npy" and source["scale"] == "255" and source["fit"] == "crop"
    assert source["shape"] == [3, 40, 40] and record["xi"] == pytest.approx(10 / 255)
    assert record["attack"] == "external" and record["metrics"]["linf_255"] == pytest.approx(10.0, abs=1e-3)
    assert set(record["floors"]) == {"random_noise", "random_sign"}
