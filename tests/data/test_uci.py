"""Tests of hposvc.data: loading, splitting, normalising, downloading."""

from __future__ import annotations

import functools
import http.server
import logging
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from hposvc.data import Dataset, dataset_names, default_data_dir, load_dataset, uci
from hposvc.errors import DataError, NotFoundError, SpecError

SHARED_DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
ENERGY = SHARED_DATA / "uci" / "energy"
ENERGY_SPLIT = (614, 78, 76)

needs_shared_data = pytest.mark.skipif(
    not (ENERGY / "data.txt").exists(),
    reason=f"shared UCI data not found at {SHARED_DATA.resolve()}",
)


@pytest.fixture(autouse=True)
def _no_url_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    # Keeps a developer's environment from changing what the tests fetch.
    monkeypatch.delenv(uci.DATA_URL_ENV, raising=False)
    monkeypatch.delenv(uci.PERMUTATION_URL_ENV, raising=False)


def _copy_energy(data_dir: Path, *, permutation: bool = True) -> Path:
    folder = data_dir / "uci" / "energy"
    folder.mkdir(parents=True)
    shutil.copyfile(ENERGY / "data.txt", folder / "data.txt")
    if permutation:
        shutil.copyfile(
            ENERGY / "permutation_indices.txt", folder / "permutation_indices.txt"
        )
    return folder


def _assert_same_data(left: Dataset, right: Dataset) -> None:
    for name in ("train", "validation", "test"):
        for suffix in ("x", "y"):
            field = f"{name}_{suffix}"
            assert torch.equal(getattr(left, field), getattr(right, field)), field
    assert (left.target_mean, left.target_std) == (right.target_mean, right.target_std)


def _permuted_energy_rows() -> np.ndarray:
    raw = np.loadtxt(ENERGY / "data.txt")
    order = np.loadtxt(ENERGY / "permutation_indices.txt", dtype=np.int64)
    return raw[order]


@pytest.mark.parametrize(
    ("name", "split", "inputs"),
    [
        ("uci_energy", (614, 78, 76), 8),
        ("uci_kin8nm", (5898, 1475, 819), 8),
        ("uci_power", (6889, 1722, 957), 4),
    ],
    ids=["energy", "kin8nm", "power"],
)
def test_load_dataset_shared_sets_have_paper_splits(
    name: str, split: tuple[int, int, int], inputs: int
) -> None:
    folder = SHARED_DATA / "uci" / name.removeprefix("uci_")
    if not (folder / "permutation_indices.txt").exists():
        pytest.skip(f"shared data for {name} not found at {folder.resolve()}")

    dataset = load_dataset(name, SHARED_DATA, download=False)

    sizes = (len(dataset.train_x), len(dataset.validation_x), len(dataset.test_x))
    assert sizes == split
    assert dataset.input_dim == inputs


@needs_shared_data
def test_load_dataset_energy_has_paper_split_shapes() -> None:
    dataset = load_dataset("uci_energy", SHARED_DATA, download=False)

    assert dataset.name == "uci_energy"
    assert (dataset.input_dim, dataset.output_dim) == (8, 1)
    assert dataset.train_x.shape == (614, 8)
    assert dataset.validation_x.shape == (78, 8)
    assert dataset.test_x.shape == (76, 8)
    assert dataset.train_y.shape == (614, 1)
    assert dataset.validation_y.shape == (78, 1)
    assert dataset.test_y.shape == (76, 1)
    assert dataset.train_x.dtype == torch.float32


@needs_shared_data
@pytest.mark.parametrize("row", [0, 613, 614, 691, 692, 767], ids=lambda r: f"row{r}")
def test_load_dataset_energy_rows_are_permuted_data_rows(row: int) -> None:
    dataset = load_dataset(
        "uci_energy", SHARED_DATA, download=False, dtype=torch.float64
    )
    permuted = _permuted_energy_rows()
    fitted = permuted[: sum(ENERGY_SPLIT[:2])]
    mean, std = fitted.mean(axis=0), fitted.std(axis=0, ddof=1)
    inputs = torch.cat((dataset.train_x, dataset.validation_x, dataset.test_x))
    targets = torch.cat((dataset.train_y, dataset.validation_y, dataset.test_y))

    expected = (permuted[row] - mean) / std
    np.testing.assert_allclose(inputs[row].numpy(), expected[:-1], rtol=1e-12)
    np.testing.assert_allclose(targets[row].numpy(), expected[-1:], rtol=1e-12)
    # And back in original units, the row of data.txt the permutation names.
    restored = targets[row].item() * dataset.target_std + dataset.target_mean
    assert restored == pytest.approx(permuted[row, -1], rel=1e-12)


@needs_shared_data
def test_load_dataset_energy_train_and_validation_are_standardised() -> None:
    dataset = load_dataset("uci_energy", SHARED_DATA, download=False)
    inputs, targets = dataset.train_and_validation()

    assert inputs.shape == (614 + 78, 8)
    assert torch.equal(inputs[:614], dataset.train_x)
    assert torch.equal(targets[614:], dataset.validation_y)
    torch.testing.assert_close(inputs.mean(dim=0), torch.zeros(8), atol=1e-5, rtol=0)
    torch.testing.assert_close(inputs.std(dim=0), torch.ones(8), atol=1e-5, rtol=0)
    assert targets.mean().item() == pytest.approx(0.0, abs=1e-5)
    assert targets.std().item() == pytest.approx(1.0, abs=1e-5)


@needs_shared_data
def test_mse_in_original_units_matches_mse_of_unnormalised_values() -> None:
    dataset = load_dataset(
        "uci_energy", SHARED_DATA, download=False, dtype=torch.float64
    )
    generator = torch.Generator().manual_seed(0)
    predictions = dataset.test_y + torch.randn(
        dataset.test_y.shape, generator=generator, dtype=torch.float64
    )
    normalised_mse = torch.mean((predictions - dataset.test_y) ** 2).item()

    def original(values: torch.Tensor) -> torch.Tensor:
        return values * dataset.target_std + dataset.target_mean

    original_mse = torch.mean((original(predictions) - original(dataset.test_y)) ** 2)
    assert dataset.mse_in_original_units(normalised_mse) == pytest.approx(
        original_mse.item(), rel=1e-10
    )


@needs_shared_data
def test_load_dataset_repeated_load_is_equal() -> None:
    first = load_dataset("uci_energy", SHARED_DATA, download=False)
    second = load_dataset("uci_energy", SHARED_DATA, download=False)

    _assert_same_data(first, second)
    assert first.train_x is not second.train_x


@needs_shared_data
def test_load_dataset_rereads_a_rewritten_file(tmp_path: Path) -> None:
    folder = _copy_energy(tmp_path)
    before = load_dataset("uci_energy", tmp_path, download=False)
    doubled = np.loadtxt(folder / "data.txt") * 2
    np.savetxt(folder / "data.txt", doubled)
    stat = (folder / "data.txt").stat()
    os.utime(folder / "data.txt", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))

    after = load_dataset("uci_energy", tmp_path, download=False)

    assert after.target_mean == pytest.approx(2 * before.target_mean)


@needs_shared_data
def test_dataset_to_changes_dtype_and_keeps_metadata() -> None:
    dataset = load_dataset("uci_energy", SHARED_DATA, download=False)

    moved = dataset.to(dtype=torch.float64)

    assert moved.test_x.dtype == torch.float64
    assert (moved.name, moved.target_std) == (dataset.name, dataset.target_std)
    torch.testing.assert_close(moved.train_x.float(), dataset.train_x)


def test_dataset_rejects_mismatched_rows() -> None:
    with pytest.raises(SpecError, match="train_x has 3 rows but train_y has 2"):
        Dataset(
            name="toy",
            train_x=torch.zeros(3, 2),
            train_y=torch.zeros(2, 1),
            validation_x=torch.zeros(1, 2),
            validation_y=torch.zeros(1, 1),
            test_x=torch.zeros(1, 2),
            test_y=torch.zeros(1, 1),
            target_mean=0.0,
            target_std=1.0,
        )


@needs_shared_data
def test_load_dataset_without_permutation_warns_and_uses_seed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _copy_energy(tmp_path, permutation=False)

    with caplog.at_level(logging.WARNING, logger="hposvc.data.uci"):
        first = load_dataset("uci_energy", tmp_path, seed=7, download=False)

    warning = caplog.records[-1]
    assert warning.levelno == logging.WARNING
    assert "uci_energy" in warning.getMessage()
    assert "seed 7" in warning.getMessage()
    assert first.train_x.shape == (614, 8)
    expected = np.loadtxt(ENERGY / "data.txt")[
        np.random.default_rng(7).permutation(768)
    ]
    restored = first.test_y[:, 0].double() * first.target_std + first.target_mean
    np.testing.assert_allclose(restored.numpy(), expected[-76:, -1], rtol=1e-6)


@needs_shared_data
def test_load_dataset_seeded_permutation_depends_only_on_seed(tmp_path: Path) -> None:
    _copy_energy(tmp_path, permutation=False)

    first = load_dataset("uci_energy", tmp_path, seed=1, download=False)
    again = load_dataset("uci_energy", tmp_path, seed=1, download=False)
    other = load_dataset("uci_energy", tmp_path, seed=2, download=False)

    _assert_same_data(first, again)
    assert not torch.equal(first.test_y, other.test_y)


@needs_shared_data
@pytest.mark.parametrize(
    ("indices", "message"),
    [
        (list(range(767)), "must hold 768 indices"),
        ([*range(767), 768], "not integers in 0..767"),
        ([*range(767), -1], "not integers in 0..767"),
        ([*range(767), 766.5], "not integers in 0..767"),
    ],
    ids=["too-short", "too-large", "negative", "fractional"],
)
def test_load_dataset_bad_permutation_raises(
    tmp_path: Path, indices: list[float], message: str
) -> None:
    folder = _copy_energy(tmp_path, permutation=False)
    lines = "\n".join(str(index) for index in indices)
    (folder / "permutation_indices.txt").write_text(lines + "\n")

    with pytest.raises(DataError, match=message) as caught:
        load_dataset("uci_energy", tmp_path, download=False)

    assert "permutation_indices.txt" in str(caught.value)


@needs_shared_data
def test_load_dataset_permutation_with_repeats_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = _copy_energy(tmp_path, permutation=False)
    indices = [0, *range(767)]
    (folder / "permutation_indices.txt").write_text("\n".join(map(str, indices)))

    with caplog.at_level(logging.WARNING, logger="hposvc.data.uci"):
        dataset = load_dataset("uci_energy", tmp_path, download=False)

    assert "1 of 768 rows are never used" in caplog.text
    assert torch.equal(dataset.train_x[0], dataset.train_x[1])


@needs_shared_data
def test_load_dataset_unexpected_row_count_splits_by_proportion(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "uci" / "energy"
    folder.mkdir(parents=True)
    np.savetxt(folder / "data.txt", np.loadtxt(ENERGY / "data.txt")[:100])

    with caplog.at_level(logging.WARNING, logger="hposvc.data.uci"):
        dataset = load_dataset("uci_energy", tmp_path, download=False)

    sizes = (len(dataset.train_x), len(dataset.validation_x), len(dataset.test_x))
    assert sizes == (72, 18, 10)
    assert "expected 768 rows but found 100" in caplog.text


def test_load_dataset_missing_file_without_download_raises(tmp_path: Path) -> None:
    expected = tmp_path / "uci" / "yacht" / "data.txt"

    with pytest.raises(DataError, match="download is disabled") as caught:
        load_dataset("uci_yacht", tmp_path, download=False)

    assert str(expected) in str(caught.value)


def test_load_dataset_corrupt_file_raises(tmp_path: Path) -> None:
    folder = tmp_path / "uci" / "wine"
    folder.mkdir(parents=True)
    (folder / "data.txt").write_text("1 2 3\n4 five 6\n")

    with pytest.raises(DataError, match="cannot parse"):
        load_dataset("uci_wine", tmp_path, download=False)


def test_load_dataset_unknown_name_lists_valid_ids() -> None:
    with pytest.raises(NotFoundError) as caught:
        load_dataset("uci_nope")

    message = str(caught.value)
    assert message.startswith("unknown data set 'uci_nope'; valid ids: ")
    assert all(name in message for name in dataset_names())
    assert isinstance(caught.value, KeyError)


def test_dataset_names_are_sorted_uci_ids() -> None:
    assert dataset_names() == [
        "uci_boston",
        "uci_concrete",
        "uci_energy",
        "uci_kin8nm",
        "uci_naval",
        "uci_power",
        "uci_wine",
        "uci_yacht",
    ]


def test_default_data_dir_honours_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(uci.DATA_DIR_ENV, str(tmp_path))
    assert default_data_dir() == tmp_path

    monkeypatch.delenv(uci.DATA_DIR_ENV)
    assert default_data_dir() == Path.home() / ".cache" / "hposvc" / "data"


def test_load_dataset_rejects_integer_dtype(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="floating-point"):
        load_dataset("uci_energy", tmp_path, dtype=torch.int64)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def served_dir(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A directory served over HTTP on 127.0.0.1, and its base URL."""
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _point_urls_at(monkeypatch: pytest.MonkeyPatch, base_url: str) -> None:
    monkeypatch.setenv(uci.DATA_URL_ENV, base_url + "/{source_name}/data.txt")
    monkeypatch.setenv(
        uci.PERMUTATION_URL_ENV, base_url + "/UCI_{title}/permutation_indices.txt"
    )


@needs_shared_data
def test_load_dataset_downloads_missing_files(
    tmp_path: Path, served_dir: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, base_url = served_dir
    (root / "energy").mkdir()
    (root / "UCI_Energy").mkdir()
    shutil.copyfile(ENERGY / "data.txt", root / "energy" / "data.txt")
    shutil.copyfile(
        ENERGY / "permutation_indices.txt",
        root / "UCI_Energy" / "permutation_indices.txt",
    )
    _point_urls_at(monkeypatch, base_url)
    data_dir = tmp_path / "empty"

    downloaded = load_dataset("uci_energy", data_dir)

    folder = data_dir / "uci" / "energy"
    assert (folder / "data.txt").read_bytes() == (ENERGY / "data.txt").read_bytes()
    assert sorted(path.name for path in folder.iterdir()) == [
        "data.txt",
        "permutation_indices.txt",
    ]
    _assert_same_data(downloaded, load_dataset("uci_energy", SHARED_DATA))


@needs_shared_data
def test_load_dataset_permutation_download_failure_falls_back(
    tmp_path: Path,
    served_dir: tuple[Path, str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    root, base_url = served_dir
    (root / "energy").mkdir()
    shutil.copyfile(ENERGY / "data.txt", root / "energy" / "data.txt")
    _point_urls_at(monkeypatch, base_url)

    with caplog.at_level(logging.WARNING, logger="hposvc.data.uci"):
        dataset = load_dataset("uci_energy", tmp_path, seed=3)

    assert f"{base_url}/UCI_Energy/permutation_indices.txt" in caplog.text
    assert "seed 3" in caplog.text
    assert not (tmp_path / "uci" / "energy" / "permutation_indices.txt").exists()
    _assert_same_data(dataset, load_dataset("uci_energy", tmp_path, seed=3))


def test_load_dataset_data_download_404_names_url(
    tmp_path: Path, served_dir: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, base_url = served_dir
    _point_urls_at(monkeypatch, base_url)

    with pytest.raises(DataError) as caught:
        load_dataset("uci_concrete", tmp_path)

    message = str(caught.value)
    assert f"{base_url}/concrete/data.txt" in message
    assert str(tmp_path / "uci" / "concrete" / "data.txt") in message
    assert "404" in message
    assert not (tmp_path / "uci" / "concrete" / "data.txt").exists()


def test_load_dataset_bad_download_is_not_written(
    tmp_path: Path, served_dir: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, base_url = served_dir
    (root / "yacht").mkdir()
    (root / "yacht" / "data.txt").write_text("<html>not data</html>\n")
    _point_urls_at(monkeypatch, base_url)
    data_dir = tmp_path / "data"

    with pytest.raises(DataError, match="cannot parse the download"):
        load_dataset("uci_yacht", data_dir)

    assert not [path for path in data_dir.rglob("*") if path.is_file()]


def test_load_dataset_malformed_url_template_raises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(uci.DATA_URL_ENV, "http://127.0.0.1/{dataset}/data.txt")

    with pytest.raises(SpecError, match=uci.DATA_URL_ENV):
        load_dataset("uci_boston", tmp_path)
