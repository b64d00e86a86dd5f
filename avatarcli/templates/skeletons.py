"""Joint names, kinematic trees and keypoint maps of the two template families.

The orders and parents are the official SMPL-X and FLAME ones: motion files index joints by
these positions, so a template that reorders them cannot play real motion.
"""

from __future__ import annotations

SMPLX_JOINT_NAMES: tuple[str, ...] = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2",
    "left_ankle", "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar",
    "right_collar", "head", "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "jaw", "left_eye_smplhf", "right_eye_smplhf",
    "left_index1", "left_index2", "left_index3", "left_middle1", "left_middle2", "left_middle3",
    "left_pinky1", "left_pinky2", "left_pinky3", "left_ring1", "left_ring2", "left_ring3",
    "left_thumb1", "left_thumb2", "left_thumb3",
    "right_index1", "right_index2", "right_index3", "right_middle1", "right_middle2",
    "right_middle3", "right_pinky1", "right_pinky2", "right_pinky3", "right_ring1",
    "right_ring2", "right_ring3", "right_thumb1", "right_thumb2", "right_thumb3",
)  # fmt: skip

SMPLX_PARENTS: tuple[int, ...] = (
    -1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 15, 15, 15,
    20, 25, 26, 20, 28, 29, 20, 31, 32, 20, 34, 35, 20, 37, 38,
    21, 40, 41, 21, 43, 44, 21, 46, 47, 21, 49, 50, 21, 52, 53,
)  # fmt: skip

FLAME_JOINT_NAMES: tuple[str, ...] = ("global", "neck", "jaw", "left_eye", "right_eye")
FLAME_PARENTS: tuple[int, ...] = (-1, 0, 1, 1, 1)

# Extra joints smplx appends after the 55 skeleton joints, in its own order
# (vertex_joint_selector): face points, feet, then fingertips left and right.
SMPLX_EXTRA_JOINT_NAMES: tuple[str, ...] = (
    "nose", "reye", "leye", "rear", "lear",
    "LBigToe", "LSmallToe", "LHeel", "RBigToe", "RSmallToe", "RHeel",
    "lthumb", "lindex", "lmiddle", "lring", "lpinky",
    "rthumb", "rindex", "rmiddle", "rring", "rpinky",
)  # fmt: skip

# OpenPose-18 (COCO order) from smplx's joint list (skeleton joints, then the extra joints above).
OPENPOSE18_FROM_SMPLX: tuple[int, ...] = (55, 12, 17, 19, 21, 16, 18, 20, 2, 5, 8, 1, 4, 7, 56, 57, 58, 59)
OPENPOSE18_NAMES: tuple[str, ...] = (
    "nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder",
    "left_elbow", "left_wrist", "right_hip", "right_knee", "right_ankle", "left_hip",
    "left_knee", "left_ankle", "right_eye", "left_eye", "right_ear", "left_ear",
)  # fmt: skip


def _hand(side: str) -> tuple[int, ...]:
    names = SMPLX_JOINT_NAMES
    base = names.index(f"{side}_wrist")
    tips = {n: 55 + SMPLX_EXTRA_JOINT_NAMES.index(f"{side[0]}{n}") for n in ("thumb", "index", "middle", "ring", "pinky")}
    order = [base]
    for finger in ("thumb", "index", "middle", "ring", "pinky"):
        order += [names.index(f"{side}_{finger}{k}") for k in (1, 2, 3)]
        order.append(tips[finger])
    return tuple(order)


# OpenPose hand (21 points: wrist, then thumb/index/middle/ring/pinky from base to tip).
OPENPOSE_HAND_FROM_SMPLX: dict[str, tuple[int, ...]] = {"left": _hand("left"), "right": _hand("right")}
