"""The multi-process path of ``accelerate launch`` (the one an FSDP / DeepSpeed run on GPUs takes), run here as two
CPU processes (DDP over gloo, examples/accelerate/ddp_cpu_2proc.yaml): every process unlearns its share of each
batch, the main process alone evaluates and stores the run."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from qru.store import RunStore

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("accelerate") is None and not (Path(sys.executable).parent / "accelerate").exists(),
                    reason="the accelerate launcher is not installed")
@pytest.mark.parametrize("adapter", ["lora", "full"])
def test_two_process_launch_stores_one_run(tmp_path, adapter):
    launcher = Path(sys.executable).parent / "accelerate"
    cmd = [str(launcher if launcher.exists() else "accelerate"), "launch", "--config_file",
           str(ROOT / "examples" / "accelerate" / "ddp_cpu_2proc.yaml"), "-m", "qru.cli", "--cache", str(tmp_path),
           "run", "--scale", "micro", "--method", "npo", "--adapter", adapter, "--max-steps", "4", "--bits", "32", "4",
           "--quiet"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    store = RunStore(tmp_path)
    (run_id,) = store.ids()
    assert store.status(run_id)["state"] == "done"
    assert "on 2 process(es)" in (store.path(run_id) / "log.txt").read_text()
    assert out.stdout.count(f"run {run_id}") == 1  # only the main process reports
    assert len(store.read_json(run_id, "train_log.json")) == 4
    weights = "adapter/adapter_model.safetensors" if adapter == "lora" else "unlearned_delta.safetensors"
    assert (store.path(run_id) / weights).is_file()
    deltas = store.deltas(run_id)
    assert deltas[(deltas["tensor"] == "total") & (deltas["quantizer"] == "none@32")]["mean_abs_delta"].iloc[0] > 0
