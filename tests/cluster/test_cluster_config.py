"""cluster/*.yaml pass Ray's own launcher validation, offline (`ray up` has no
dry run)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

CLUSTER_DIR = Path(__file__).resolve().parents[2] / "cluster"


@pytest.mark.parametrize(
    "path", sorted(CLUSTER_DIR.glob("*.yaml")), ids=lambda p: Path(p).name
)
def test_cluster_yaml_validates(path: Path) -> None:
    # Private Ray API, pinned with Ray's version in constraints.txt.
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(yaml.safe_load(path.read_text()))
    validate_config(config)
    for node_type in config["available_node_types"].values():
        for amount in node_type.get("resources", {}).values():
            assert float(amount).is_integer(), "node resources must be whole numbers"
    assert "--port=6380" in " ".join(config["head_start_ray_commands"])
