"""Provenance (issue 21, item 6): library versions, machine and the full quantizer settings stored beside each new
run and checkpoint comparison, shown by `qru show`, written by `qru export`; older runs read as not recorded."""
import importlib.metadata
import json

from qru.cli import main
from qru.provenance import FILE, provenance_lines, quantizer_settings, read_provenance
from qru.quant.spec import QuantSpec
from qru.store import RunStore


def test_a_run_records_its_versions_and_quantizers_and_show_and_export_carry_them(micro_cache, micro_models,
                                                                                  store_copy, tmp_path, capsys):
    root = store_copy(micro_cache, ("models", "corpus"))
    assert main(["--cache", str(root), "run", "--scale", "micro", "--method", "ga", "--regularizer", "gdr",
                 "--adapter", "full", "--lr", "1e-3", "--bits", "32", "4", "--quant-type", "nf4", "--quiet"]) == 0
    store = RunStore(root)
    (run_id,) = store.ids()
    record = read_provenance(store.path(run_id))
    for name in ("torch", "transformers", "peft", "bitsandbytes", "qru"):
        assert record["versions"][name] == importlib.metadata.version(name)
    assert [q["key"] for q in record["quantizers"]] == [s.key for s in store.config(run_id).quant_specs()]
    nf4 = next(q for q in record["quantizers"] if q["key"] == "nf4-b64@4")
    assert nf4["blocksize"] == 64 and nf4["double_quant"] is False and "fake-quant" in nf4["how"]
    assert record["device"] == "cpu"
    capsys.readouterr()
    assert main(["--cache", str(root), "show", run_id]) == 0
    out = capsys.readouterr().out
    assert f"torch {importlib.metadata.version('torch')}" in out and "nf4-b64@4: fake-quant" in out
    assert main(["--cache", str(root), "export", run_id, str(tmp_path / "out")]) == 0
    assert json.loads((tmp_path / "out" / FILE).read_text()) == record
    (store.path(run_id) / FILE).unlink()  # a run stored before provenance existed
    capsys.readouterr()
    assert main(["--cache", str(root), "show", run_id]) == 0
    assert "provenance: not recorded" in capsys.readouterr().out


def test_quantizer_settings_name_how_each_quantizer_computes():
    assert "load_in_4bit=True" in quantizer_settings(QuantSpec(4, "fp4"), quant_load=True)["how"]
    assert "llm_int8_threshold=6.0" in quantizer_settings(QuantSpec(8, "int8"), quant_load=True)["how"]
    rtn = quantizer_settings(QuantSpec(3, "rtn-sym", group_size=0))
    assert rtn["symmetric"] and "per output channel" in rtn["how"] and rtn["group_size"] == 0
    assert quantizer_settings(QuantSpec())["how"].startswith("none")
    assert provenance_lines(None) == ["provenance: not recorded (the run was stored before qru recorded library "
                                      "versions)"]
