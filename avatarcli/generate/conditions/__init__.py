"""ControlNet condition images drawn from the posed template: OpenPose for bodies, the
MediaPipe face mesh for heads."""
