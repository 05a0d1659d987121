"""The downstream defect segmenter: model, training data, training loop and inference."""
