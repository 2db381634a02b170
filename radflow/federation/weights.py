"""Model weights in a release: a flat vector of numbers, encoded compactly (never a JSON list of
a million numbers), and the bytes it costs.

The encoded value of a ``weights`` field (what a site sends, checked by the gate and again by
the hub's inbox with :func:`check_encoded`)::

    {"dtype": "float16",            # or "uint32": a masked update (radflow.federation.secagg)
     "shape": [1412345],            # the field's resolved shape (usually one named dimension)
     "sha256": "9f2c...",           # hex SHA-256 of the raw little-endian bytes
     "data": "AAA8..."}             # those bytes, standard base64 with padding

Only the weights travel: no optimizer state, no names, no layout. The layout (the ordered list
of ``(name, shape)`` of the model's tensors) is fixed by the study's shared plan, so every
party can flatten a state into the vector and back without it being in the release:

    layout = layout_of(state)                     # [("conv.weight", (32, 1, 3, 3, 3)), ...]
    value = encode(flatten(state, layout))        # at the site: fp16 on the wire
    vector = check_encoded(value, (P,), ("float16",))   # gate / hub: refuses what is malformed
    state = unflatten(vector, layout)             # float32 arrays by name (torch-free)

The hash only guards the data against damage in transit and in storage (it is no
signature: the release is authenticated by the site's token). fp16 keeps about three
significant digits and values up to 65504; :func:`encode` refuses a vector that does not fit.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from radflow.errors import FederationError
from radflow.federation.release import MAX_WEIGHT_VALUES
from radflow.federation.structure import Refused

DTYPES = {"float16": np.dtype("<f2"), "uint32": np.dtype("<u4")}
KEYS = {"dtype", "shape", "sha256", "data"}
HEX64 = re.compile(r"^[0-9a-f]{64}$")
Layout = Sequence[tuple[str, tuple[int, ...]]]


def encode(vector: np.ndarray, dtype: str = "float16") -> dict[str, Any]:
    """The encoded value of ``vector`` (any shape) as ``dtype``.

    Raises:
        FederationError: an unknown dtype, a value that is not finite or does not fit fp16, or
            (for uint32) a vector that is not already uint32.
    """
    if dtype not in DTYPES:
        raise FederationError(f"weights dtype {dtype!r} is not one of {sorted(DTYPES)}",
                              fix="encode weights as float16 (or a masked update as uint32)")
    array = np.asarray(vector)
    if dtype == "uint32":
        if array.dtype != np.uint32:
            raise FederationError(f"a uint32 encoding needs a uint32 vector, got {array.dtype}",
                                  fix="quantize first (radflow.federation.secagg.mask_update)")
    else:
        as_float = array.astype(np.float32, copy=False)
        if not np.isfinite(as_float).all():
            raise FederationError("the weights hold NaN or infinite values",
                                  fix="stop the round at this site: the local training diverged")
        if as_float.size and float(np.abs(as_float).max()) > float(np.finfo(np.float16).max):
            raise FederationError("a weight is beyond fp16's range (65504)",
                                  fix="clip the update (the study's clip_norm) or lower the "
                                      "learning rate")
    raw = np.ascontiguousarray(array, dtype=DTYPES[dtype]).tobytes()
    return {"dtype": dtype, "shape": list(array.shape),
            "sha256": hashlib.sha256(raw).hexdigest(), "data": base64.b64encode(raw).decode()}


def decode(value: Mapping[str, Any]) -> np.ndarray:
    """The array an encoded value holds, in its dtype and shape (for a value that passed
    :func:`check_encoded`; an unchecked one is checked against its own declared shape).

    Raises:
        Refused: the value is malformed (see :func:`check_encoded`).
    """
    shape = value.get("shape") if isinstance(value, Mapping) else None
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool)
                                              for d in shape):
        raise Refused("schema", "the weights value has no shape")
    return check_encoded(value, tuple(shape), tuple(DTYPES))


def check_encoded(value: Any, shape: tuple[int, ...], dtypes: Sequence[str]) -> np.ndarray:
    """Check an encoded weights value against its field's resolved ``shape`` and declared
    ``dtypes``, and return the array it holds.

    Raises:
        Refused: ``schema`` (not an object of exactly the four keys, an undeclared dtype, a bad
            hash or base64, a value that is not finite), ``shape`` (not the declared shape, more
            than MAX_WEIGHT_VALUES values, data of the wrong length).
    """
    if not isinstance(value, Mapping) or set(value) != KEYS:
        raise Refused("schema", "a weights value is an object with exactly dtype, shape, "
                                "sha256 and data")
    dtype, declared, hashed, data = (value[k] for k in ("dtype", "shape", "sha256", "data"))
    if not isinstance(dtype, str) or dtype not in dtypes or dtype not in DTYPES:
        raise Refused("schema", f"weights dtype not one of the declared {list(dtypes)}")
    if not isinstance(declared, list) or len(declared) > 8 or declared != list(shape) or \
            any(isinstance(d, bool) for d in declared):
        raise Refused("shape", f"weights shape is not the declared {list(shape)}")
    count = math.prod(shape)
    if count > MAX_WEIGHT_VALUES:
        raise Refused("shape", f"more than {MAX_WEIGHT_VALUES} weights")
    if not isinstance(hashed, str) or not HEX64.match(hashed):
        raise Refused("schema", "the weights sha256 is not 64 lower-case hex digits")
    nbytes = count * DTYPES[dtype].itemsize
    if not isinstance(data, str) or len(data) != 4 * math.ceil(nbytes / 3):
        raise Refused("shape", f"weights data is not {nbytes} bytes in base64")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise Refused("schema", "weights data is not base64") from None
    if len(raw) != nbytes:
        raise Refused("shape", f"weights data is not {nbytes} bytes")
    if hashlib.sha256(raw).hexdigest() != hashed:
        raise Refused("schema", "the weights sha256 does not match their data")
    array = np.frombuffer(raw, dtype=DTYPES[dtype]).reshape(shape)
    if dtype == "float16" and not np.isfinite(array).all():
        raise Refused("schema", "the weights hold NaN or infinite values")
    return array


def layout_of(state: Mapping[str, np.ndarray]) -> list[tuple[str, tuple[int, ...]]]:
    """The layout of a state: its tensors' names and shapes, in the state's order."""
    return [(name, tuple(int(d) for d in np.shape(array))) for name, array in state.items()]


def parameter_count(layout: Layout) -> int:
    """The number of values a layout holds (P, the length of the flat vector)."""
    return sum(math.prod(shape) for _, shape in layout)


def flatten(state: Mapping[str, np.ndarray], layout: Layout) -> np.ndarray:
    """The state's tensors, in the layout's order, as one float32 vector.

    Raises:
        FederationError: a tensor is missing, extra or of another shape than the layout says.
    """
    if set(state) != {name for name, _ in layout}:
        missing = sorted({name for name, _ in layout} - set(state))
        extra = sorted(set(state) - {name for name, _ in layout})
        raise FederationError(f"the state does not match the plan's layout (missing {missing[:5]}"
                              f", extra {extra[:5]})",
                              fix="build the network from the study's shared plan; drop "
                                  "optimizer state and buffers the layout does not name")
    parts = []
    for name, shape in layout:
        array = np.asarray(state[name], dtype=np.float32)
        if array.shape != tuple(shape):
            raise FederationError(f"tensor {name!r} has shape {array.shape}, the layout says "
                                  f"{tuple(shape)}", fix="build the network from the study's "
                                                         "shared plan")
        parts.append(array.reshape(-1))
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def unflatten(vector: np.ndarray, layout: Layout) -> dict[str, np.ndarray]:
    """The flat vector back as float32 tensors by name (a torch-free state).

    Raises:
        FederationError: the vector's length is not the layout's parameter count.
    """
    flat = np.asarray(vector).reshape(-1)
    if flat.size != parameter_count(layout):
        raise FederationError(f"the weights have {flat.size} values, the layout "
                              f"{parameter_count(layout)}",
                              fix="the release belongs to another plan: check the study's plan")
    state, start = {}, 0
    for name, shape in layout:
        size = math.prod(shape)
        state[name] = flat[start:start + size].astype(np.float32).reshape(shape)
        start += size
    return state


def wire_bytes(release: Mapping[str, Any]) -> int:
    """The size of a release on the wire: its JSON as the site's client posts it (``requests``'
    ``json=``: ``json.dumps`` with its default separators), in bytes. The hub records it per
    round and per site."""
    return len(json.dumps({"release": release}, allow_nan=False).encode())


def checkpoint_bytes(parameters: int) -> int:
    """What a full fp32 checkpoint of a model with ``parameters`` values weighs (what nnU-Net's
    checkpoint_final.pth holds, and what Kaapana sends): the weights and Adam's two moment
    estimates, 4 bytes each (the few scalars beside them are left out)."""
    return 3 * 4 * parameters
