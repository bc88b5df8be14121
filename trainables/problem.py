"""The learning problem of one trial: a network, its data and its losses.

Everything stays in whole tensors on the trial's device: a weight step reads
either the full training set or a random batch drawn by index from it, never
through a per-row data loader.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn
from torch.func import functional_call

from hposvc.data import Dataset
from hposvc.hypergrad import Params
from hposvc.hypergrad.autodiff import gradient

__all__ = ["Problem"]


class Problem:
    """Training, validation and test data with the MSE loss of one network.

    Args:
        dataset: The normalised data set (on the trial's device and dtype).
        model: The network; only its structure is used, the weights are
            passed explicitly to every loss.
        uses_validation: Whether the algorithm holds the validation split
            out. When it does not, it trains on training + validation rows.
        batch_size: Rows per weight step; ``None`` or at least the number of
            training rows means full batch.
        generator: Draws the batches; its state is part of a checkpoint.
    """

    def __init__(
        self,
        dataset: Dataset,
        model: nn.Module,
        *,
        uses_validation: bool,
        batch_size: int | None,
        generator: torch.Generator,
    ):
        self.dataset = dataset
        self.model = model
        if uses_validation:
            self.train_x, self.train_y = dataset.train_x, dataset.train_y
        else:
            self.train_x, self.train_y = dataset.train_and_validation()
        rows = self.train_x.shape[0]
        self.batch_size = (
            None if batch_size is None or batch_size >= rows else batch_size
        )
        self.generator = generator

    def loss(self, params: Mapping[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
        """Mean squared error of the network with weights ``params``."""
        forward_with = getattr(self.model, "forward_with", None)
        if forward_with is not None:
            prediction = forward_with(params, x)
        else:
            prediction = functional_call(self.model, dict(params), (x,))
        return nn.functional.mse_loss(prediction, y)

    def batch(self) -> tuple[Tensor, Tensor]:
        """The rows of the next weight step."""
        if self.batch_size is None:
            return self.train_x, self.train_y
        index = torch.randint(
            self.train_x.shape[0],
            (self.batch_size,),
            generator=self.generator,
            device=self.generator.device,
        ).to(self.train_x.device)
        return self.train_x[index], self.train_y[index]

    def validation_loss(self, params: Mapping[str, Tensor]) -> Tensor:
        return self.loss(params, self.dataset.validation_x, self.dataset.validation_y)

    def gradient(self, params: Params, x: Tensor, y: Tensor) -> Params:
        """Gradient of the loss on ``(x, y)``, detached; no graph outlives it."""
        return gradient(self.loss, params, x, y)[0]

    def validation_gradient(self, params: Params) -> Params:
        """Gradient of the full validation loss, detached."""
        return self.gradient(
            params, self.dataset.validation_x, self.dataset.validation_y
        )

    @torch.no_grad()
    def evaluate(self, params: Params) -> dict[str, float]:
        """Full-data losses; the test loss also in the target's original units."""
        data = self.dataset
        training = float(self.loss(params, self.train_x, self.train_y))
        validation = float(self.validation_loss(params))
        test = float(self.loss(params, data.test_x, data.test_y))
        return {
            "training_loss": training,
            "validation_loss": validation,
            "test_loss": test,
            "test_loss_original_units": data.mse_in_original_units(test),
        }
