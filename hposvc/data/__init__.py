"""Regression data sets, loaded whole into tensors.

:func:`load_dataset` returns a :class:`Dataset` split into training,
validation and test rows and normalised; :func:`dataset_names` lists the ids
it accepts.
"""

from hposvc.data.dataset import Dataset
from hposvc.data.uci import dataset_names, default_data_dir, load_dataset

__all__ = ["Dataset", "dataset_names", "default_data_dir", "load_dataset"]
