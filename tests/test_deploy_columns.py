"""The methods table's deployment columns: size ratio, theoretical FLOP reduction and measured speed-up, from
hand-made records (two models; one timed, one not)."""

from __future__ import annotations

import math

import pytest
from synthetic_records import cls_record

from ptsbench.records import write_json_atomic
from ptsbench.tables import load_runs, methods_table
from ptsbench.tables.render import to_markdown


def _record(model: str, recon: str, *, size=None, flops=None, latency=None) -> dict:
    sp = {"rate": 0.7, "pattern": "unstructured", "criterion": "magnitude"}
    rec = cls_record(model, 0.5, sparsity=sp, recon=recon)
    for key, value in (("size_bytes", size), ("flops", flops), ("latency", latency)):
        if value is not None:
            rec[key] = value
    return rec


def test_methods_table_shows_size_theoretical_flops_and_measured_speed(tmp_path):
    timed = {"speedup": 0.8, "device": "cpu", "device_name": "cpu", "backends": {"dense": 20, "csr": 2}}
    recs = [
        _record("m_a", "none", size={"dense": 1000, "compressed": 300}, flops={"reduction": 3.0}, latency=timed),
        _record("m_b", "none", size={"dense": 1000, "compressed": 200}, flops={"reduction": 4.0}),
        _record("m_a", "sparsegpt", size={"dense": 1000, "compressed": 250}, flops={"reduction": 3.5}),
        _record("m_b", "sparsegpt"),  # a record from before these fields
    ]
    for r in recs:
        write_json_atomic(tmp_path / f"{r['name']}-{r['choices']['reconstruction']}.json", r)
    table = methods_table(load_runs(tmp_path))
    v = table.values
    mag, sgpt = ("CLS", "70 ERK", "Magnitude"), ("CLS", "70 ERK", "SparseGPT")
    assert v.loc[mag, "size (compressed / dense) %"] == pytest.approx(25.0)  # mean of 30% and 20%
    assert v.loc[mag, "FLOP reduction x (theoretical)"] == pytest.approx(3.5)
    assert v.loc[mag, "measured speed-up x"] == pytest.approx(0.8)  # below 1: the sparse model is slower
    assert v.loc[sgpt, "size (compressed / dense) %"] == pytest.approx(25.0)  # the old record has none
    assert math.isnan(v.loc[sgpt, "measured speed-up x"])
    md = to_markdown(table)
    assert "FLOP reduction x (theoretical)" in md and "measured speed-up x" in md
    assert any("FLOP reduction: theoretical" in n for n in table.notes)
    assert "measured speed-up of CLS 70 ERK Magnitude: cpu: csr; 1 of 2 runs" in table.notes
