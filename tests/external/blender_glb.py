"""What Blender makes of a skinned .glb: run inside Blender,

    blender -b --factory-startup --python tests/external/blender_glb.py -- FILE.glb [SHAPE_KEY]

imports the file with Blender's own glTF importer and prints one JSON line: the mesh's shape
keys, its armature's bones, the animation's frame range and, for SHAPE_KEY (default blink),
the key's value over the animation as Blender evaluates it (the morph-target weights track).
"""

from __future__ import annotations

import json
import sys

import bpy  # type: ignore[import-not-found]  # Blender's own module


def main() -> None:
    import numpy as np

    if not hasattr(np, "bool"):  # Debian's Blender 3.4 importer asks for np.bool, gone from numpy 1.24 (Blender's own builds ship 1.23)
        np.bool = bool  # type: ignore[attr-defined]
    args = sys.argv[sys.argv.index("--") + 1 :]
    path, key_name = args[0], (args[1] if len(args) > 1 else "blink")
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.import_scene.gltf(filepath=path)
    meshes = [o for o in bpy.context.scene.objects if o.type == "MESH"]
    armatures = [o for o in bpy.context.scene.objects if o.type == "ARMATURE"]
    mesh = meshes[0]
    keys = mesh.data.shape_keys
    names = [k.name for k in keys.key_blocks] if keys else []
    out = {"blender": bpy.app.version_string, "meshes": len(meshes), "shape_keys": names,
           "bones": len(armatures[0].data.bones) if armatures else 0}  # fmt: skip
    action = keys.animation_data.action if keys and keys.animation_data else None
    out["shape_key_action"] = action.name if action else None
    if action is not None and key_name in names:
        start, end = (round(f) for f in action.frame_range)
        scene = bpy.context.scene
        values = []
        for frame in range(start, end + 1):
            scene.frame_set(frame)
            values.append(keys.key_blocks[key_name].value)
        out.update(frames=[start, end], key=key_name, key_min=min(values), key_max=max(values),
                   key_peak_frame=start + values.index(max(values)))  # fmt: skip
    print("BLENDER_GLB " + json.dumps(out))


main()
