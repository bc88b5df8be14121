"""Tests of hposvc.hypergrad.lorraine on an L2-regularised quadratic.

Training loss L_T(w) = ½ (w - a)ᵀ A (w - a), plus ½ wd ‖w‖² through the
regularised gradient; validation loss L_V(w) = ½ ‖w - c‖². At the fixed point
w* = (A + wd I)⁻¹ A a the implicit hypergradient has the closed form
dL_V/d log10 wd = -g_Vᵀ (A + wd I)⁻¹ w* · wd · ln 10, and its truncation to i
Neumann terms with step size α replaces (A + wd I)⁻¹ by
α Σ_{j<i} (I - α (A + wd I))^j.
"""

from __future__ import annotations

import math

import pytest
import torch

from hposvc.hypergrad import initial_raw
from hposvc.hypergrad.lorraine import lorraine_hypergradient

DTYPE = torch.float64
DIMENSION = 4
LR = 0.2
WEIGHT_DECAY = 0.05


def _problem() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    factor = torch.randn(DIMENSION, DIMENSION, generator=generator, dtype=DTYPE)
    curvature = factor @ factor.T / DIMENSION + 0.5 * torch.eye(DIMENSION, dtype=DTYPE)
    centre = torch.randn(DIMENSION, generator=generator, dtype=DTYPE)
    target = torch.randn(DIMENSION, generator=generator, dtype=DTYPE)
    return curvature, centre, target


def _training_loss(
    params: dict[str, torch.Tensor], curvature: torch.Tensor, centre: torch.Tensor
) -> torch.Tensor:
    offset = params["w"] - centre
    return 0.5 * offset @ curvature @ offset


def _fixed_point_and_gradients() -> tuple[dict[str, torch.Tensor], ...]:
    curvature, centre, target = _problem()
    regularised = curvature + WEIGHT_DECAY * torch.eye(DIMENSION, dtype=DTYPE)
    optimum = torch.linalg.solve(regularised, curvature @ centre)
    return {"w": optimum}, {"w": optimum - target}


def _expected(terms: int | None) -> float:
    curvature, _, _ = _problem()
    (params, validation_gradient) = _fixed_point_and_gradients()
    regularised = curvature + WEIGHT_DECAY * torch.eye(DIMENSION, dtype=DTYPE)
    if terms is None:
        inverse = torch.linalg.inv(regularised)
    else:
        contraction = torch.eye(DIMENSION, dtype=DTYPE) - LR * regularised
        inverse = LR * sum(
            (torch.linalg.matrix_power(contraction, j) for j in range(terms)),
            start=torch.zeros(DIMENSION, DIMENSION, dtype=DTYPE),
        )
    # ∂f/∂ log10 wd = w · wd · ln 10 for f = A(w - a) + wd w.
    derivative = params["w"] * WEIGHT_DECAY * math.log(10.0)
    return float(-validation_gradient["w"] @ inverse @ derivative)


def _hypergradient(terms: int) -> float:
    curvature, centre, _ = _problem()
    params, validation_gradient = _fixed_point_and_gradients()
    raw = initial_raw(LR, WEIGHT_DECAY, 0.9, dtype=DTYPE)
    result = lorraine_hypergradient(
        _training_loss, params, raw, validation_gradient, terms, curvature, centre
    )
    assert set(result) == {"log10_weight_decay"}
    return float(result["log10_weight_decay"])


def test_lorraine_with_many_terms_equals_closed_form_implicit_hypergradient() -> None:
    assert _hypergradient(400) == pytest.approx(_expected(None), rel=1e-9)


@pytest.mark.parametrize("terms", [1, 2, 5], ids=lambda i: f"i={i}")
def test_lorraine_with_few_terms_equals_truncated_series(terms: int) -> None:
    assert _hypergradient(terms) == pytest.approx(_expected(terms), rel=1e-10)
    assert _hypergradient(terms) != pytest.approx(_expected(None), rel=1e-3)


def test_lorraine_ignores_momentum() -> None:
    curvature, centre, _ = _problem()
    params, validation_gradient = _fixed_point_and_gradients()
    results = [
        lorraine_hypergradient(
            _training_loss,
            params,
            initial_raw(LR, WEIGHT_DECAY, momentum, dtype=DTYPE),
            validation_gradient,
            3,
            curvature,
            centre,
        )["log10_weight_decay"]
        for momentum in (0.0, 0.9)
    ]
    torch.testing.assert_close(results[0], results[1], rtol=0, atol=0)
