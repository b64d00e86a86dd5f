"""Measuring the machinery against known truth: the generation gauge (reference avatars, the
reference guidance, reconstruction runs), the tracking gauge, the capture gauge (reference
people, videos with ground truth, held-out and novel-pose scores) and image metrics."""
