"""Segmentation metrics: torchmetrics where it has them, AUPRO implemented here."""
