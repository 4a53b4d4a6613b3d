"""Modalities, decoders and datasets."""

from polymodal.data.record import MODALITIES, BadRecord, Record

__all__ = ["MODALITIES", "BadRecord", "Record"]
