"""The in-memory form of a regression data set, split and normalised."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from hposvc.errors import SpecError

__all__ = ["Dataset"]

_SPLITS = ("train", "validation", "test")


@dataclass(frozen=True, eq=False)
class Dataset:
    """A regression data set held as whole tensors, one pair per split.

    Inputs and targets are normalised with the mean and standard deviation of
    the training and validation rows together, so losses computed on these
    tensors are in normalised units; :meth:`mse_in_original_units` converts a
    mean squared error back to the target's own units.

    Tensors are compared by identity (``eq=False``): comparing data sets by
    value is a job for :func:`torch.equal` on the fields.

    Attributes:
        name: The data set's id, e.g. ``"uci_energy"``.
        train_x: Training inputs, shape ``(n_train, input_dim)``.
        train_y: Training targets, shape ``(n_train, output_dim)``.
        validation_x: Validation inputs, shape ``(n_validation, input_dim)``.
        validation_y: Validation targets, shape ``(n_validation, output_dim)``.
        test_x: Test inputs, shape ``(n_test, input_dim)``.
        test_y: Test targets, shape ``(n_test, output_dim)``.
        target_mean: Mean of the raw target over training + validation rows.
        target_std: Standard deviation of the raw target over the same rows;
            a normalised target ``y`` is ``target_mean + target_std * y`` in the
            original units.
    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    validation_x: torch.Tensor
    validation_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    target_mean: float
    target_std: float

    def __post_init__(self) -> None:
        for split in _SPLITS:
            self._check_split(split)
        widths = {
            (self._inputs(split).shape[1], self._targets(split).shape[1])
            for split in _SPLITS
        }
        if len(widths) != 1:
            raise SpecError(
                f"data set {self.name!r}: splits disagree on (input, output) "
                f"widths: {sorted(widths)}"
            )
        if not self.target_std > 0:
            raise SpecError(
                f"data set {self.name!r}: target_std must be > 0, got {self.target_std}"
            )

    @property
    def input_dim(self) -> int:
        """Number of input features."""
        return int(self.train_x.shape[1])

    @property
    def output_dim(self) -> int:
        """Number of target columns."""
        return int(self.train_y.shape[1])

    def train_and_validation(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the training rows followed by the validation rows.

        Algorithms that hold no validation split out train on these.

        Returns:
            ``(inputs, targets)``, each a new tensor with the training rows
            first.
        """
        inputs = torch.cat((self.train_x, self.validation_x))
        targets = torch.cat((self.train_y, self.validation_y))
        return inputs, targets

    def to(
        self,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> Dataset:
        """Return a copy whose tensors are on ``device`` with ``dtype``.

        Args:
            device: Target device; ``None`` keeps each tensor's device.
            dtype: Target floating-point dtype; ``None`` keeps each tensor's
                dtype.

        Returns:
            A new :class:`Dataset`; tensors already in place are shared, not
            copied.
        """
        moved = {
            field.name: getattr(self, field.name).to(device=device, dtype=dtype)
            for field in dataclasses.fields(self)
            if isinstance(getattr(self, field.name), torch.Tensor)
        }
        return dataclasses.replace(self, **moved)

    def mse_in_original_units(self, normalised_mse: float) -> float:
        """Convert a mean squared error on normalised targets to target units.

        Normalising divides the target by ``target_std``, so squared errors
        scale by ``target_std ** 2``; the mean cancels out of a difference.

        Args:
            normalised_mse: A mean squared error computed on these tensors.

        Returns:
            The same error in the squared units of the raw target.
        """
        return float(normalised_mse) * self.target_std**2

    def _inputs(self, split: str) -> torch.Tensor:
        inputs: torch.Tensor = getattr(self, f"{split}_x")
        return inputs

    def _targets(self, split: str) -> torch.Tensor:
        targets: torch.Tensor = getattr(self, f"{split}_y")
        return targets

    def _check_split(self, split: str) -> None:
        inputs, targets = self._inputs(split), self._targets(split)
        if inputs.ndim != 2 or targets.ndim != 2:
            raise SpecError(
                f"data set {self.name!r}: {split}_x and {split}_y must be 2-D, got "
                f"shapes {tuple(inputs.shape)} and {tuple(targets.shape)}"
            )
        if inputs.shape[0] != targets.shape[0]:
            raise SpecError(
                f"data set {self.name!r}: {split}_x has {inputs.shape[0]} rows "
                f"but {split}_y has {targets.shape[0]}"
            )
