"""Device meshes and shardings derived from the models' logical axes.

A mesh has a ``data`` axis (batch parallelism, and parameter sharding in FSDP mode) and a
``model`` axis (tensor parallelism over heads, FFN neurons and the vocabulary). Optimizer
state leaves (masks, criterion EMAs, Adam moments) take the sharding of the parameter they
are shaped like, matched by path, so every piece of pruning state lives next to its weight.
With ``shard_state`` (ZeRO-1 style), that state and a frozen teacher are also split over
``data`` while the parameters stay replicated: the optimizer updates each device's slice
and the updated parameters are gathered (:func:`jaxprune.train.train_step_fn`'s
``update_sharding``).

Either axis may be ``Auto`` (the compiler propagates shardings) or ``Explicit`` (shardings
are part of the arrays' types, ``jax.typeof``). The models are written for Auto axes: the
engine runs their forward and backward with every axis Auto (:func:`auto_axes_call`) and
gives the results the types of the inputs they belong to, so everything outside the model
(the optimizer, masks, criteria) runs with the mesh's own axis types.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import AbstractMesh, AxisType, Mesh, NamedSharding, PartitionSpec

from jaxprune import obert, paths

# logical axis -> mesh axis; axes not listed are replicated.
TENSOR_RULES = {"heads": "model", "mlp": "model", "vocab": "model"}
AXES = ("data", "model")


class MeshMismatchError(ValueError):
    """Arrays of one computation are typed on different meshes, or on another mesh than the
    one in context (``jax.set_mesh``)."""


@dataclasses.dataclass(frozen=True)
class Sharding:
    """How a run is laid out on devices: a mesh with axes ``data`` and ``model``."""

    mesh: Mesh
    fsdp: bool = False  # also shard parameters (and their state) over `data`, on `embed`
    shard_state: bool = False  # shard optimizer / pruning state and teacher over `data`

    def __post_init__(self) -> None:
        if not set(AXES) <= set(self.mesh.axis_names):
            raise ValueError(
                f"Sharding needs a mesh with axes {AXES}, got {self.mesh.axis_names}: "
                f"build it with jaxprune.train.make_mesh"
            )
        if self.mesh.manual_axes:
            raise ValueError(f"mesh axes {self.mesh.manual_axes} are Manual: use Auto or Explicit")

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
        """NamedSharding per parameter from its logical axes (a ``PartitionSpec`` of names
        per leaf, e.g. ``models.logical_axes(model)``); a dimension whose size the mesh axis
        does not divide stays replicated.

        Raises:
          ValueError: ``logical`` is not shaped like ``params``, or a spec names more axes
            than its parameter has dimensions.
        """
        rules, sizes = self.rules(), dict(self.mesh.shape)
        flat, treedef = jax.tree_util.tree_flatten_with_path(params)
        specs, spec_def = jax.tree.flatten(logical, is_leaf=lambda x: isinstance(x, PartitionSpec))
        if not paths.same_treedef(treedef, spec_def):
            missing = sorted(
                set(paths.leaf_paths(params))
                ^ set(paths.leaf_paths(jax.tree.unflatten(spec_def, [0] * len(specs))))
            )
            raise ValueError(
                f"logical axes are not shaped like the params (differing paths: {missing[:5]}):"
                f" take them from the same model, e.g. models.logical_axes(model)"
            )

        def one(keypath: Any, p: Any, spec: PartitionSpec) -> NamedSharding:
            if len(spec) > np.ndim(p):
                raise ValueError(
                    f"logical axes {spec} of {paths.path_str(keypath)} name more dimensions "
                    f"than its shape {np.shape(p)} has"
                )
            axes: list[str | None] = []
            used: set[str] = set()
            for dim, name in zip(np.shape(p), tuple(spec) + (None,) * np.ndim(p), strict=False):
                axis = rules.get(name) if name else None
                if axis is None or axis in used or dim % sizes[axis]:
                    axes.append(None)
                else:
                    axes.append(axis)
                    used.add(axis)
            return NamedSharding(self.mesh, PartitionSpec(*axes))

        return jax.tree.unflatten(
            treedef, [one(k, p, s) for (k, p), s in zip(flat, specs, strict=True)]
        )

    def for_state(self, param_shardings: Any, params: Any) -> Any:
        """The shardings of state shaped like each parameter (optimizer moments, masks,
        criterion state, a frozen teacher): the parameter's own; with ``shard_state`` also
        split over ``data`` on the first dimension that axis divides and no other axis
        shards (kept as the parameter's where none does, e.g. under ``fsdp``)."""
        if not self.shard_state:
            return param_shardings
        size = dict(self.mesh.shape)["data"]

        def one(s: NamedSharding, p: Any) -> NamedSharding:
            spec = tuple(s.spec) + (None,) * (np.ndim(p) - len(s.spec))
            used = {a for entry in spec if entry for a in np.atleast_1d(entry)}
            if "data" in used or size == 1:
                return s
            for i, (dim, entry) in enumerate(zip(np.shape(p), spec, strict=True)):
                if entry is None and dim % size == 0:
                    return NamedSharding(
                        self.mesh, PartitionSpec(*spec[:i], "data", *spec[i + 1 :])
                    )
            return s

        return jax.tree.map(one, param_shardings, params)

    def like_params(self, tree: Any, params: Any, param_shardings: Any) -> Any:
        """Shardings for any pytree (optimizer state, train state) whose leaves are shaped
        like a parameter with a matching path suffix (sharded like it), are its Fisher blocks
        (oBERT: sharded like it, :func:`jaxprune.obert.blocked_spec`), or neither (replicated)."""
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
                if suffix not in by_path:
                    continue
                shape, sharding = by_path[suffix]
                if shape == np.shape(leaf):
                    return sharding
                if _is_blocked(shape, np.shape(leaf)):
                    spec = obert.blocked_spec(sharding.spec, shape, np.shape(leaf), self.mesh.shape)
                    return NamedSharding(self.mesh, spec)
            return self.replicated

        return jax.tree_util.tree_map_with_path(one, tree)


def _is_blocked(param_shape: tuple[int, ...], shape: tuple[int, ...]) -> bool:
    """``shape`` is the Fisher-block form of a parameter (:func:`jaxprune.obert.blocked_shape`)."""
    return (
        len(param_shape) >= 1
        and len(shape) == len(param_shape) + 2
        and shape == (obert.blocked_shape(param_shape, shape[-1]))
    )


def _axis_types(axis_types: AxisType | Sequence[AxisType] | None) -> tuple[AxisType, ...]:
    if axis_types is None:
        return (AxisType.Explicit,) * 2
    types = (axis_types,) * 2 if isinstance(axis_types, AxisType) else tuple(axis_types)
    if len(types) != 2 or any(t not in (AxisType.Auto, AxisType.Explicit) for t in types):
        raise ValueError(
            f"axis_types must be Auto or Explicit, one for both axes or one per axis (data, "
            f"model); got {axis_types}"
        )
    return types


def make_mesh(
    data: int = -1,
    model: int = 1,
    devices: Any = None,
    *,
    axis_types: AxisType | Sequence[AxisType] | None = None,
) -> Mesh:
    """A (data, model) mesh over all (or the given) devices; ``data=-1`` takes the rest.

    Args:
      data, model: the axes' sizes; their product is the number of devices.
      devices: the devices, in mesh order (default: all, in a topology-aware order).
      axis_types: ``jax.sharding.AxisType`` of both axes, or one per axis (data, model).
        Default Explicit for both: this follows current JAX practice, where
        ``jax.make_mesh`` makes Explicit axes unless told otherwise and the sharding guide
        (docs.jax.dev, "Distributed arrays and automatic parallelization") starts from
        explicit mode, so arrays placed on this mesh type-check against meshes users build
        with JAX. The engine runs Auto, Explicit and mixed meshes alike.

    Raises:
      ValueError: the sizes do not fit the devices, or an axis type is neither Auto nor
        Explicit.
    """
    types = _axis_types(axis_types)
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
    return Mesh(grid, AXES, axis_types=types)


def _mesh_of(leaf: Any) -> AbstractMesh | None:
    """The mesh in ``leaf``'s type; None for host values and single-device arrays."""
    if not isinstance(leaf, jax.Array):
        return None
    mesh = jax.typeof(leaf).sharding.mesh
    return None if mesh.empty else mesh


def typed_mesh(**trees: Any) -> AbstractMesh:
    """The one mesh that the arrays of the named ``trees`` are typed on (inside ``jit``:
    their avals) and that is in context (``jax.set_mesh``), if any; empty when none is.

    Raises:
      MeshMismatchError: two arrays, or an array and the context, are on different meshes
        (axis sizes, names or types differ); the message names the first such array.
    """
    context = jax.sharding.get_abstract_mesh()
    found: tuple[str, AbstractMesh] | None = None
    if not context.empty:
        found = ("the mesh set with jax.set_mesh", context)
    for name, tree in trees.items():
        for keypath, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
            mesh = _mesh_of(leaf)
            if mesh is None:
                continue
            where = f"{name}/{paths.path_str(keypath)}".rstrip("/")
            if found is None:
                found = (where, mesh)
            elif mesh != found[1]:
                raise MeshMismatchError(
                    f"{where} is on mesh {_describe(mesh)} but {found[0]} is "
                    f"{_describe(found[1])}: place every array with one Sharding(mesh) and "
                    f"run under that mesh's jax.set_mesh or none"
                )
    return context if found is None else found[1]


def _describe(mesh: AbstractMesh) -> str:
    axes = ", ".join(
        f"{n}={s} {t.name}"
        for n, s, t in zip(mesh.axis_names, mesh.axis_sizes, mesh.axis_types, strict=True)
    )
    return f"({axes})"


def auto_axes_call(
    fn: Callable[..., Any],
    mesh: AbstractMesh,
    out_sharding: Callable[[AbstractMesh], Any],
    *args: Any,
) -> Any:
    """``fn(*args)``; on a mesh with Explicit axes, run with every axis Auto.

    Code written for Auto axes (the models: gathers, reshapes, einsums whose output
    sharding is ambiguous under Explicit types) runs unchanged; its inputs keep their
    device layout and its outputs are resharded to ``out_sharding(mesh)``, a prefix pytree
    of ``NamedSharding`` on ``mesh``. Every traced value ``fn`` uses must be in ``args``.
    """
    if not mesh.explicit_axes:
        return fn(*args)
    return jax.sharding.auto_axes(fn, out_sharding=out_sharding(mesh))(*args)


def typed_sharding(mesh: AbstractMesh, x: Any) -> NamedSharding:
    """``x``'s sharding as its type says (Explicit axes only), on ``mesh``."""
    return NamedSharding(mesh, jax.typeof(x).sharding.spec)


__all__ = [
    "AXES",
    "TENSOR_RULES",
    "MeshMismatchError",
    "Sharding",
    "auto_axes_call",
    "make_mesh",
    "typed_mesh",
    "typed_sharding",
]
