"""Signed capability records and the capability index."""

from protocols.capabilities.index import Candidate, CapabilityIndex
from protocols.capabilities.records import (
    RECORD_KIND,
    CapabilityRecord,
    CapabilitySpec,
    RecordCache,
    RecordInfo,
)
from protocols.capabilities.versions import matches, parse_version

__all__ = [
    "RECORD_KIND",
    "Candidate",
    "CapabilityIndex",
    "CapabilityRecord",
    "CapabilitySpec",
    "RecordCache",
    "RecordInfo",
    "matches",
    "parse_version",
]
