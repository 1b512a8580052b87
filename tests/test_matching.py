"""What the tables may pool: runs that differ in any knob that changes a score (eval.*, dataset.*, an
allocator knob) are never averaged as replicates; diverged reconstructions are shown or left out;
records of an unknown schema version are refused by name; expected runs (gaps) and 'held fixed'."""

from __future__ import annotations

import hashlib
import json
import math

import pytest
from test_aggregate import load_runs_from, make_record

from ptsbench.aggregate import main
from ptsbench.identity import record_filename
from ptsbench.tables import build_tables, load_runs
from ptsbench.tables.matching import keep_main_setting


def with_knobs(rec: dict, sparse: float | None = None, **knobs) -> dict:
    """The record with config knobs set ('eval__max_samples' -> eval.max_samples), its digest and name redone."""
    rec = json.loads(json.dumps(rec))
    for key, value in knobs.items():
        group, name = key.split("__")
        rec["config"].setdefault(group, {})[name] = value
    if sparse is not None:
        rec["sparse"] = {rec["task"]["metric"]: sparse}
    rec["digest"] = hashlib.sha256(json.dumps(rec["config"], sort_keys=True).encode()).hexdigest()
    rec["name"] = record_filename(rec["choices"], rec["config"]["sparsity"]["rate"], rec["digest"])[:-5]
    return rec


def three_models(alloc: str, rels=(0.9, 0.8, 0.4), **kw) -> list[dict]:
    return [make_record(m, alloc, 0.5, r, used=False, **kw) for m, r in zip(("m_a", "m_b", "m_c"), rels)]


@pytest.mark.parametrize(
    "knob", [{"eval__max_samples": 50}, {"dataset__num_test": 100}], ids=["eval.max_samples", "dataset.num_test"]
)
def test_a_copy_that_differs_in_one_scoring_knob_is_not_a_replicate(tmp_path, knob):
    recs = three_models("uniform", (0.5, 0.4, 0.3)) + three_models("erk")
    recs.append(with_knobs(recs[-3], sparse=0.2 * 0.8, **knob))  # m_a's ERK run scored on another test set
    rs = load_runs_from(recs, tmp_path)
    (t2, _, t6, t4, _), _ = build_tables(rs)
    name = next(iter(knob)).replace("__", ".")
    cells = {(c["row"], c["column"]): c for c in t2.cells}
    assert t2.values.at["ERK", "CLS 50"] == pytest.approx(70.0) and cells[("ERK", "CLS 50")]["n_runs"] == 3
    odd = f"ERK ({name}={next(iter(knob.values()))})"
    assert t2.values.loc[odd].isna().all()  # its own row, left out of the comparison: it matches no cell
    assert any(f"ERK ({name}=" in n and "shares no cell" in n for n in t2.notes)
    assert any(f"runs that differ in {name} are separate rows" in n for n in t2.notes)


def test_tables_4_and_6_keep_a_rows_main_setting(tmp_path):
    recs = three_models("l2norm") + [make_record(m, "l2norm", 0.7, 0.3, used=False) for m in ("m_a", "m_b", "m_c")]
    recs.append(with_knobs(recs[0], sparse=0.1, eval__max_samples=50))
    (_, _, t6, t4, _), _ = build_tables(load_runs_from(recs, tmp_path))
    assert t4.values.at["CLS", "50"] == pytest.approx(70.0)  # the 50-sample copy of m_a is not averaged in
    assert any("1 run(s) left out, their eval.max_samples differ" in n for n in t4.notes)
    assert any("ResNet: 1 run(s) left out, their eval.max_samples differ" in n for n in t6.notes)


def test_keep_main_setting_keeps_the_majority(tmp_path):
    recs = three_models("l2norm") + [with_knobs(make_record("m_a", "l2norm", 0.5, 0.1), eval__max_samples=50)]
    runs = load_runs_from(recs, tmp_path).ok
    kept, notes = keep_main_setting(runs, "task")
    assert len(kept) == 3 and "eval.max_samples" not in "".join(kept.setting.map(str))
    assert notes == ["cls: 1 run(s) left out, their eval.max_samples differ from the row's other runs"]


def test_an_allocator_knob_makes_another_row_and_its_default_matches_an_absent_knob(tmp_path):
    recs = three_models("uniform", (0.5, 0.4, 0.3))
    recs += [with_knobs(r, allocator__power=1.0) for r in three_models("erk")[:2]] + three_models("erk")[2:]
    recs += [with_knobs(r, sparse=s, allocator__power=2) for r, s in zip(three_models("erk"), (0.64, 0.35, 0.54))]
    (t2, *_), _ = build_tables(load_runs_from(recs, tmp_path))
    # power=1.0 written out and power left at its default (1.0) are one setting; power=2 is its own row
    assert list(t2.values.index) == ["Uniform", "ERK", "ERK (allocator.power=2)"]
    assert t2.values.at["ERK", "CLS 50"] == pytest.approx(70.0)
    assert t2.values.at["ERK (allocator.power=2)", "CLS 50"] == pytest.approx(100 * (0.8 + 0.7 + 0.6) / 3)
    cells = {(c["row"], c["column"]): c for c in t2.cells}
    assert cells[("ERK (allocator.power=2)", "CLS 50")]["n_runs"] == 3  # never 6 runs 'as if two seeds'
    assert "ERK: runs that differ in allocator.power are separate rows, not replicates" in t2.notes


def recon_record(model: str, sparse: float, units: int, diverged: int) -> dict:
    rec = make_record(model, "l2norm", 0.5, sparse=sparse, recon="block", inp="sparse", ec=False)
    rec["reconstruction"] = {"units": [{"unit": f"u{i}", "diverged": i < diverged} for i in range(units)]}
    return rec


def test_diverged_units_are_counted_and_an_all_diverged_run_is_left_out(tmp_path):
    recs = three_models("l2norm", (0.9, 0.9, 0.9))
    recs += [recon_record("m_a", 0.76, 4, 1), recon_record("m_b", 0.5 * 0.9, 4, 4), recon_record("m_c", 0.76, 4, 0)]
    (_, t3, *_), _ = build_tables(load_runs_from(recs, tmp_path))
    cells = {(c["row"], c["column"]): c for c in t3.cells}
    assert cells[("Block-wise", "CLS 50")]["models"] == "m_a;m_c"  # m_b's every unit diverged: not a result
    assert [(g["kind"], g["model"]) for g in t3.gaps if g["kind"] == "diverged"] == [("diverged", "m_b")]
    assert "1 run(s) left out: every reconstruction unit diverged (see gaps)" in t3.notes
    assert any(n.endswith("Block-wise 1 of 4 unit(s) in 1 run(s)") and "diverged units" in n for n in t3.notes)


def test_a_record_of_an_unknown_schema_version_is_refused_by_name(tmp_path, capsys):
    recs = three_models("erk")
    recs[0]["schema_version"] = 99
    rs = load_runs_from(recs, tmp_path)
    path = tmp_path / "recs" / f"{recs[0]['name']}.json"
    assert len(rs.runs) == 2 and rs.refused == [
        f"{path}: record schema_version 99 is not one this ptsbench reads (1); "
        "aggregate it with the ptsbench version that wrote it"
    ]
    assert main([str(tmp_path / "recs"), "--out", str(tmp_path / "t"), "--no-plots", "--strict"]) == 3
    assert f"Refused records (unknown schema version):\n- {path}: record schema_version 99" in capsys.readouterr().out


def test_runs_only_one_row_made_are_not_gaps_of_the_others(tmp_path):
    """The methods rows' 0.8 ERK runs: no other allocator ran 0.8, so Table 2 expects nothing there."""
    recs = three_models("uniform", (0.5, 0.4, 0.3)) + three_models("erk")
    recs += [make_record(m, "erk", 0.8, 0.3, used=False) for m in ("m_a", "m_b")]
    (t2, *_), _ = build_tables(load_runs_from(recs, tmp_path))
    assert t2.gaps == [] and "CLS 80" not in t2.values.columns
    # but a column two rows ran is expected of both: a missing Uniform run at 0.8 is a gap
    recs += [make_record("m_a", "uniform", 0.8, 0.1, used=False)]
    (t2, *_), _ = build_tables(load_runs_from(recs, tmp_path / "2"))
    assert [(g["row"], g["model"], g["rate"]) for g in t2.gaps] == [("Uniform", "m_b", 0.8)]


def test_held_fixed_names_only_knobs_off_their_defaults(tmp_path):
    knobs = {"dataset__name": "mnist5k", "dataset__num_test": 300, "dataset__split_seed": 0, "calib__num_samples": 1024}
    recs = [with_knobs(r, **knobs) for a in ("erk", "uniform") for r in three_models(a, dataset="mnist5k")]
    (t2, *_), _ = build_tables(load_runs_from(recs, tmp_path))
    # calib.num_samples=1024 is the schema's default, split_seed=0 the one conf/dataset/mnist5k.yaml sets
    fixed = [n for n in t2.notes if n.startswith("held fixed")]
    assert fixed == ["held fixed, not at their defaults: dataset.num_test=300"]
    at_default = {f["knob"]: f["at_default"] for f in t2.fixed}
    assert at_default["calib.num_samples"] and at_default["dataset.split_seed"] and not at_default["dataset.num_test"]


def test_no_table_title_or_note_carries_an_issue_number(tmp_path):
    from ptsbench.tables import methods_table

    rs = load_runs_from(three_models("erk") + three_models("uniform"), tmp_path)
    tables, _ = build_tables(rs)
    text = " ".join(t.title + " ".join(t.notes) for t in [*tables, methods_table(rs)])
    assert "issue" not in text.lower() and not math.isnan(tables[0].values.at["ERK", "CLS 50"])
    assert methods_table(load_runs(tmp_path / "recs")).title == "Methods: score and cost of each method"
