"""Training: the loop, checkpoints and resume, augmentation, batching from the feature store."""
