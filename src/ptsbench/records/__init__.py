"""Run records: the schema, the type, and their files (one JSON per run, written atomically)."""

from .io import find_record, load_finished, write_json_atomic, write_record
from .run_record import RunRecord, peak_memory
from .schema import RECORD_SCHEMA, SCHEMA_VERSION, validate_record

__all__ = [
    "RECORD_SCHEMA",
    "SCHEMA_VERSION",
    "RunRecord",
    "find_record",
    "load_finished",
    "peak_memory",
    "validate_record",
    "write_json_atomic",
    "write_record",
]
