"""Simulation entities: requests and batches."""

from vidur.entities.batch import Batch
from vidur.entities.request import Request

__all__ = ["Batch", "Request"]
