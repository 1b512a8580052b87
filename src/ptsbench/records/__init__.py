"""Run records: the schema, the type, and their files (one JSON per run, written atomically)."""

from .claims import Claim, claim_run
from .io import (
    check_record_target,
    find_record,
    load_finished,
    write_json_atomic,
    write_record,
    write_record_or_fallback,
)
from .run_record import RunRecord, peak_memory
from .schema import RECORD_SCHEMA, SCHEMA_VERSION, validate_record

__all__ = [
    "RECORD_SCHEMA",
    "SCHEMA_VERSION",
    "Claim",
    "RunRecord",
    "check_record_target",
    "claim_run",
    "find_record",
    "load_finished",
    "peak_memory",
    "validate_record",
    "write_json_atomic",
    "write_record",
    "write_record_or_fallback",
]
