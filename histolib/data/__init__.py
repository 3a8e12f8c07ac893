"""Data: the phantom generator, folder datasets of real images, the dataset builder."""
