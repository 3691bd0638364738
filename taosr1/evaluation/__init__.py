"""Evaluation of graded predictions: metrics with intervals, calibration, reports, comparison, drift.

Nothing here imports torch or pyspark; matplotlib is imported (Agg) only where a figure is drawn.
"""
