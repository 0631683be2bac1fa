"""Datasets: readers for the three layouts, validation, image decoding, demo data and hub fetch."""
