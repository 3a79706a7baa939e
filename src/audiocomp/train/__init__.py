"""Training: the loop, checkpoints and resume, device and precision, augmentation, the model spec."""
