"""The networks hposvc trains: fully connected ReLU networks."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from itertools import pairwise

import torch
from torch import nn

from hposvc.errors import SpecError

__all__ = ["MLP", "build_model"]


class MLP(nn.Module):
    """A multilayer perceptron: linear layers with a ReLU between each pair.

    The last layer has no activation, so the output is a regression target.
    Parameters are drawn from PyTorch's default :class:`torch.nn.Linear`
    distribution: weights and biases uniform on ``[-b, b]`` with
    ``b = 1 / sqrt(fan_in)`` (Kaiming-uniform with ``a = sqrt(5)`` for weights).

    Args:
        layer_sizes: Widths from input to output, e.g. ``(8, 50, 1)`` for eight
            inputs, one hidden layer of 50 units and one output.
        generator: Source of the initial parameters; ``None`` draws them from
            the global RNG, as :class:`torch.nn.Linear` does. Use
            :func:`build_model` for a seeded network.
        dtype: Parameter dtype; ``None`` means torch's default dtype.

    Raises:
        SpecError: ``layer_sizes`` has fewer than two entries or an entry that
            is not a positive integer.
    """

    def __init__(
        self,
        layer_sizes: Sequence[int],
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.layer_sizes = _validated_layer_sizes(layer_sizes)
        layers: list[nn.Module] = []
        for fan_in, fan_out in pairwise(self.layer_sizes):
            if layers:
                layers.append(nn.ReLU())
            # Built on the meta device so that construction draws nothing from
            # the global RNG; the parameters are filled in below.
            layers.append(nn.Linear(fan_in, fan_out, device="meta", dtype=dtype))
        self.layers = nn.Sequential(*layers)
        self._parameter_names = [
            (f"layers.{index}.weight", f"layers.{index}.bias")
            for index, layer in enumerate(layers)
            if isinstance(layer, nn.Linear)
        ]
        self.to_empty(device="cpu")
        self.reset_parameters(generator)

    @property
    def linear_layers(self) -> list[nn.Linear]:
        """The linear layers, from input to output."""
        return [layer for layer in self.layers if isinstance(layer, nn.Linear)]

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Draw every parameter afresh from PyTorch's default Linear distribution.

        Args:
            generator: Source of randomness; ``None`` uses the global RNG.
                Layers are drawn in order, weight before bias, so one seed
                always gives the same parameters.
        """
        with torch.no_grad():
            for layer in self.linear_layers:
                nn.init.kaiming_uniform_(
                    layer.weight, a=math.sqrt(5), generator=generator
                )
                bound = 1 / math.sqrt(layer.in_features)
                nn.init.uniform_(layer.bias, -bound, bound, generator=generator)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Map inputs of shape ``(..., n_in)`` to outputs of shape ``(..., n_out)``.

        ``n_in`` and ``n_out`` are the first and last of ``layer_sizes``.
        """
        outputs: torch.Tensor = self.layers(inputs)
        return outputs

    def forward_with(
        self, params: Mapping[str, torch.Tensor], inputs: torch.Tensor
    ) -> torch.Tensor:
        """The same map with the weights taken from ``params``, keyed as
        :meth:`named_parameters` names them.

        A pure function of ``params``, for ``torch.func`` transforms; cheaper
        per call than :func:`torch.func.functional_call`, which swaps the
        module's parameters in and out.
        """
        outputs = inputs
        for index, (weight, bias) in enumerate(self._parameter_names):
            if index:
                outputs = torch.relu(outputs)
            outputs = nn.functional.linear(outputs, params[weight], params[bias])
        return outputs


def build_model(
    layer_sizes: Sequence[int], *, seed: int, dtype: torch.dtype = torch.float32
) -> MLP:
    """Build an :class:`MLP` whose initial parameters depend only on ``seed``.

    The parameters come from a private :class:`torch.Generator`, so the global
    RNG is neither read nor advanced, and the same seed gives bit-identical
    parameters on every call and in every process.

    Args:
        layer_sizes: Widths from input to output, as for :class:`MLP`.
        seed: Seed of the initial parameters.
        dtype: Parameter dtype.

    Returns:
        The network, on the CPU.

    Raises:
        SpecError: ``layer_sizes`` is invalid.
    """
    generator = torch.Generator().manual_seed(seed)
    return MLP(layer_sizes, generator=generator, dtype=dtype)


def _validated_layer_sizes(layer_sizes: Sequence[int]) -> tuple[int, ...]:
    sizes = tuple(layer_sizes)
    if len(sizes) < 2:
        raise SpecError(
            "layer_sizes must hold at least 2 sizes (input and output), "
            f"got {list(sizes)}"
        )
    for index, size in enumerate(sizes):
        is_integer = isinstance(size, numbers.Integral) and not isinstance(size, bool)
        if not is_integer or size < 1:
            raise SpecError(
                f"layer_sizes[{index}] must be a positive integer, got {size!r}"
            )
    return tuple(int(size) for size in sizes)
