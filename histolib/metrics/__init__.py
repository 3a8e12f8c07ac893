"""Metrics: segmentation, instance, image quality and diversity."""
