"""The glTF 2.0 binary container (.glb): one JSON chunk and one binary buffer, laid out as the
glTF 2.0 specification describes, for the skinned mesh (:mod:`avatarcli.formats.gltf`) and the
Gaussian splats (:mod:`avatarcli.formats.splat_gltf`).

trimesh writes glTF meshes but not skins, morph-target animation or extension attributes,
and pygltflib would add a dependency for what is a few lines of struct packing.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np

FLOAT, UINT8, UINT16, UINT32 = 5126, 5121, 5123, 5125
ARRAY_BUFFER, ELEMENT_ARRAY_BUFFER = 34962, 34963
POINTS, TRIANGLES = 0, 4
_MAGIC, _JSON, _BIN = 0x46546C67, 0x4E4F534A, 0x004E4942
_WIDTH = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT4": 16}
_DTYPE = {FLOAT: np.float32, UINT8: np.uint8, UINT16: np.uint16, UINT32: np.uint32, 5120: np.int8, 5122: np.int16}


class GlbBuffer:
    """Collects the binary buffer's views and their accessors."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.views: list[dict[str, Any]] = []
        self.accessors: list[dict[str, Any]] = []

    def add(
        self, array: np.ndarray, component: int, kind: str, target: int | None = None, minmax: bool = False, normalized: bool = False
    ) -> int:
        """Append ``array`` (count, width) or (count,) as one view and accessor; returns the accessor's index.

        ``minmax`` records per-component bounds (glTF requires them on POSITION, morph-target
        positions and animation inputs).
        """
        while len(self.data) % 4:
            self.data.append(0)
        raw = np.ascontiguousarray(array).tobytes()
        view: dict[str, Any] = {"buffer": 0, "byteOffset": len(self.data), "byteLength": len(raw)}
        if target is not None:
            view["target"] = target
        self.data.extend(raw)
        self.views.append(view)
        acc: dict[str, Any] = {"bufferView": len(self.views) - 1, "componentType": component, "count": int(array.shape[0]), "type": kind}
        if normalized:
            acc["normalized"] = True
        if minmax:
            flat = array.reshape(array.shape[0], -1)
            acc["min"] = flat.min(0).tolist()
            acc["max"] = flat.max(0).tolist()
        self.accessors.append(acc)
        return len(self.accessors) - 1

    def glb(self, gltf: dict[str, Any]) -> bytes:
        """The .glb bytes of ``gltf`` (buffers, views and accessors filled in from this buffer)."""
        while len(self.data) % 4:
            self.data.append(0)
        gltf = {**gltf, "buffers": [{"byteLength": len(self.data)}], "bufferViews": self.views, "accessors": self.accessors}
        js = json.dumps(gltf, separators=(",", ":")).encode()
        js += b" " * (-len(js) % 4)
        total = 12 + 8 + len(js) + 8 + len(self.data)
        out = bytearray(struct.pack("<III", _MAGIC, 2, total))
        out += struct.pack("<II", len(js), _JSON) + js
        out += struct.pack("<II", len(self.data), _BIN) + bytes(self.data)
        return bytes(out)


def read_glb_json(data: bytes) -> tuple[dict[str, Any], bytes]:
    """The JSON and binary chunks of a .glb (for checks and tests)."""
    magic, version, length = struct.unpack("<III", data[:12])
    if magic != _MAGIC or version != 2 or length != len(data):
        raise ValueError("not a glTF 2.0 binary")
    n, _ = struct.unpack("<II", data[12:20])
    js = json.loads(data[20 : 20 + n])
    m, _ = struct.unpack("<II", data[20 + n : 28 + n])
    return js, data[28 + n : 28 + n + m]


def accessor_array(gltf: dict[str, Any], binary: bytes, index: int) -> np.ndarray:
    """Accessor ``index`` as an array (count, width), or (count,) for scalars; tightly packed
    views only (what this package writes), normalized integers left as stored."""
    acc = gltf["accessors"][index]
    view = gltf["bufferViews"][acc["bufferView"]]
    width = _WIDTH[acc["type"]]
    dtype = np.dtype(_DTYPE[acc["componentType"]])
    if view.get("byteStride", width * dtype.itemsize) != width * dtype.itemsize:
        raise ValueError("interleaved buffer views are not read here")
    offset = view.get("byteOffset", 0) + acc.get("byteOffset", 0)
    data = np.frombuffer(binary, dtype=dtype.newbyteorder("<"), count=acc["count"] * width, offset=offset)
    return data.reshape(acc["count"], width) if width > 1 else data
