"""Datasets: fetching, safe extraction, the offline demo set, layouts and preprocessing."""
