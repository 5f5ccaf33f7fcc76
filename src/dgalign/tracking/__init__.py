"""Experiment tracking: a run's records, hyper-parameters and identity in TensorBoard, MLflow
or Weights & Biases (`--logger`, optional extras), live while training and replayed after the
fact (`dgalign runs export`). results.jsonl stays the source of truth; see docs/tracking.md.
"""

from dgalign.tracking.base import Logger, Point, RunInfo, metric_name, record_point
from dgalign.tracking.session import LOGGERS, Tracking, TrackingError, check_loggers

__all__ = [
    "LOGGERS",
    "Logger",
    "Point",
    "RunInfo",
    "Tracking",
    "TrackingError",
    "check_loggers",
    "metric_name",
    "record_point",
]
