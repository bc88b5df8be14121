"""Plain-autograd gradients and VJPs against explicit Jacobians, on nested trees."""

from __future__ import annotations

import torch

from hposvc.hypergrad.autodiff import (
    gradient,
    leaves,
    rebuild,
    requiring_grad,
    vector_jacobian_product,
)

DTYPE = torch.float64


def _tree() -> dict:
    generator = torch.Generator().manual_seed(3)
    return {
        "a": torch.randn(3, generator=generator, dtype=DTYPE),
        "nested": {
            "b": torch.randn(2, 2, generator=generator, dtype=DTYPE),
            "c": torch.randn((), generator=generator, dtype=DTYPE),
        },
        "unused": torch.randn(4, generator=generator, dtype=DTYPE),
    }


def test_rebuild_inverts_leaves_on_a_nested_tree() -> None:
    tree = _tree()
    rebuilt = rebuild(tree, [leaf * 2 for leaf in leaves(tree)])

    assert rebuilt.keys() == tree.keys()
    assert rebuilt["nested"].keys() == tree["nested"].keys()
    torch.testing.assert_close(rebuilt["nested"]["b"], 2 * tree["nested"]["b"])


def test_vector_jacobian_product_matches_the_explicit_jacobian() -> None:
    tree = _tree()
    inputs = requiring_grad(tree)

    def outputs_of(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> tuple:
        return (torch.sin(a) * c, b @ b + c * a[:2])

    with torch.enable_grad():
        first, second = outputs_of(
            inputs["a"], inputs["nested"]["b"], inputs["nested"]["c"]
        )
    product = vector_jacobian_product({"first": first, "second": second}, inputs)
    generator = torch.Generator().manual_seed(4)
    vector = {
        "first": torch.randn(3, generator=generator, dtype=DTYPE),
        "second": torch.randn(2, 2, generator=generator, dtype=DTYPE),
    }

    ours = product(vector)
    jacobians = torch.autograd.functional.jacobian(
        outputs_of, (tree["a"], tree["nested"]["b"], tree["nested"]["c"])
    )
    expected = [
        sum(
            torch.tensordot(vector[name], jacobians[out][arg], dims=vector[name].dim())
            for out, name in enumerate(("first", "second"))
        )
        for arg in range(3)
    ]
    torch.testing.assert_close(ours["a"], expected[0])
    torch.testing.assert_close(ours["nested"]["b"], expected[1])
    torch.testing.assert_close(ours["nested"]["c"], expected[2])
    # An input the outputs do not reach gets zeros of its shape, not None.
    torch.testing.assert_close(ours["unused"], torch.zeros(4, dtype=DTYPE))
    # The graph is kept: the product can be taken again.
    torch.testing.assert_close(product(vector)["a"], ours["a"])


def test_gradient_is_detached_unless_a_graph_is_asked_for() -> None:
    params = {"w": torch.tensor([1.0, -2.0], dtype=DTYPE)}

    def loss_fn(p: dict, scale: torch.Tensor) -> torch.Tensor:
        return scale * (p["w"] ** 3).sum()

    scale = torch.tensor(0.5, dtype=DTYPE)
    plain, loss = gradient(loss_fn, params, scale)
    torch.testing.assert_close(plain["w"], 1.5 * params["w"] ** 2)
    assert not plain["w"].requires_grad and not loss.requires_grad
    assert not params["w"].requires_grad

    weights = requiring_grad(params)
    differentiable, _ = gradient(loss_fn, weights, scale, create_graph=True)
    hessian_vector = vector_jacobian_product(differentiable, weights)(
        {"w": torch.ones(2, dtype=DTYPE)}
    )
    torch.testing.assert_close(hessian_vector["w"], 3.0 * params["w"])
