"""Device meshes and shardings derived from the models' logical axes.

A mesh has a ``data`` axis (batch parallelism, and parameter sharding in FSDP mode) and a
``model`` axis (tensor parallelism over heads, FFN neurons and the vocabulary). Optimizer
state leaves (masks, criterion EMAs, Adam moments) take the sharding of the parameter they
are shaped like, matched by path, so every piece of pruning state lives next to its weight.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxprune import paths

# logical axis -> mesh axis; axes not listed are replicated.
TENSOR_RULES = {"heads": "model", "mlp": "model", "vocab": "model"}


@dataclasses.dataclass(frozen=True)
class Sharding:
    """How a run is laid out on devices."""

    mesh: Mesh
    fsdp: bool = False  # also shard parameters (and their state) over `data`, on `embed`

    def rules(self) -> dict[str, str]:
        return {**TENSOR_RULES, "embed": "data"} if self.fsdp else dict(TENSOR_RULES)

    @property
    def batch(self) -> NamedSharding:
        """Leading (batch) axis over ``data``."""
        return NamedSharding(self.mesh, PartitionSpec("data"))

    @property
    def replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, PartitionSpec())

    def params(self, params: Any, logical: Any) -> Any:
        """NamedSharding per parameter from its logical axes; a dimension whose size the
        mesh axis does not divide stays replicated."""
        rules, sizes = self.rules(), dict(self.mesh.shape)

        def one(p, spec):
            axes: list[str | None] = []
            used: set[str] = set()
            for dim, name in zip(
                p.shape, tuple(spec) + (None,) * (p.ndim - len(spec)), strict=False
            ):
                axis = rules.get(name) if name else None
                if axis is None or axis in used or dim % sizes[axis]:
                    axes.append(None)
                else:
                    axes.append(axis)
                    used.add(axis)
            return NamedSharding(self.mesh, PartitionSpec(*axes))

        return jax.tree.map(one, params, logical, is_leaf=lambda x: isinstance(x, PartitionSpec))

    def like_params(self, tree: Any, params: Any, param_shardings: Any) -> Any:
        """Shardings for any pytree (optimizer state, train state) whose leaves are either
        shaped like a parameter with a matching path suffix (sharded like it) or not
        (replicated)."""
        by_path = {
            paths.path_str(k): (np.shape(p), s)
            for (k, p), s in zip(
                jax.tree_util.tree_flatten_with_path(params)[0],
                jax.tree.leaves(param_shardings),
                strict=True,
            )
        }

        def one(keypath, leaf):
            path = paths.path_str(keypath)
            for start in range(len(path.split("/"))):
                suffix = "/".join(path.split("/")[start:])
                if suffix in by_path and by_path[suffix][0] == np.shape(leaf):
                    return by_path[suffix][1]
            return self.replicated

        return jax.tree_util.tree_map_with_path(one, tree)


def make_mesh(data: int = -1, model: int = 1, devices: Any = None) -> Mesh:
    """A (data, model) mesh over all (or the given) devices; ``data=-1`` takes the rest."""
    flat = np.asarray(jax.devices() if devices is None else devices).ravel()
    if model < 1 or flat.size % model:
        raise ValueError(f"model={model} does not divide the {flat.size} devices")
    if data == -1:
        data = flat.size // model
    if data * model != flat.size:
        raise ValueError(f"mesh {data}x{model} needs {data * model} devices, have {flat.size}")
    if devices is None:  # topology-aware order on TPU / GPU
        grid = mesh_utils.create_device_mesh((data, model))
    else:
        grid = flat.reshape(data, model)
    return Mesh(grid, ("data", "model"))
