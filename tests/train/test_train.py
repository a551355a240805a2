"""Training: schedule, configs, one step, exact resume, export, signals, two-process DDP."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import state_max_diff, train_two_ranks

from mel2mel import constants as C
from mel2mel.cli import main
from mel2mel.errors import UserError
from mel2mel.models import load_acoustic
from mel2mel.models.config import AcousticConfig
from mel2mel.train.acoustic_loop import train_acoustic
from mel2mel.train.checkpoint import load_checkpoint, model_from_checkpoint
from mel2mel.train.config import RunConfig, TrainConfig, load_run_config
from mel2mel.train.loop import TrainResult, lr_lambda

pytestmark = pytest.mark.usefixtures("single_thread")

ROOT = Path(__file__).resolve().parents[2]


def tiny_config(**train) -> RunConfig:
    base = dict(
        steps=6,
        batch_size=2,
        crop_frames=48,
        warmup_steps=2,
        num_workers=0,
        log_every=2,
        valid_every=3,
        valid_batches=1,
        checkpoint_every=3,
        crops_per_item=2,
    )
    return RunConfig(AcousticConfig.preset("debug"), TrainConfig(**{**base, **train}))


def test_lr_schedule():
    kw = {"warmup": 10, "total": 110, "floor": 0.01}
    assert lr_lambda(0, **kw) == pytest.approx(0.1)
    assert lr_lambda(9, **kw) == pytest.approx(1.0)
    assert lr_lambda(60, **kw) == pytest.approx(0.505)
    assert lr_lambda(110, **kw) == pytest.approx(0.01)
    assert lr_lambda(500, **kw) == pytest.approx(0.01)


def test_shipped_configs_parse():
    full = load_run_config(ROOT / "configs" / "acoustic.yaml")
    assert full.model == AcousticConfig.preset("paper")
    assert full.train.loss == "tanh-log-abs"
    debug = load_run_config(ROOT / "configs" / "debug.yaml")
    assert debug.model.lstm_hidden == 8
    assert RunConfig.from_dict(full.to_dict()) == full


def test_config_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  stepz: 3\n")
    with pytest.raises(UserError, match="stepz"):
        load_run_config(bad)
    bad.write_text("train:\n  loss: l1\n")
    with pytest.raises(UserError, match="unknown loss"):
        load_run_config(bad)
    with pytest.raises(ValueError, match="warmup"):
        TrainConfig(steps=5, warmup_steps=6)


def test_one_training_step(synthetic_dataset, tmp_path):
    config = tiny_config(steps=1, warmup_steps=0, valid_every=1, checkpoint_every=1)
    torch.manual_seed(0)
    result = train_acoustic(synthetic_dataset, tmp_path / "run", config, progress=False)
    assert result.step == 1 and not result.interrupted
    state = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert state["step"] == 1 and state["format"] == 1
    assert state["config"]["model"]["n_instruments"] == 2  # from the manifest
    assert [i["name"] for i in state["instruments"]] == ["Synth 0", "Synth 1"]
    assert set(state["rng"]) >= {"torch", "python", "numpy"}
    assert "exp_avg" in str(state["optimizer"]["state"][0].keys())
    assert torch.isfinite(torch.tensor(result.valid["valid/loss"]))
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any("train/loss" in x for x in lines) and any("valid/mae_db" in x for x in lines)
    assert (tmp_path / "run" / "config.yaml").is_file()
    assert list((tmp_path / "run" / "tb").glob("events.*"))
    # FiLM left identity after one step: the step moved it
    assert model_from_checkpoint(state).film_out.gamma.weight.abs().sum() > 0


@pytest.mark.parametrize("workers", [0, 1])
def test_resume_equals_uninterrupted(synthetic_dataset, tmp_path, workers):
    config = tiny_config(num_workers=workers)
    full = train_acoustic(synthetic_dataset, tmp_path / "full", config, progress=False)
    part = train_acoustic(synthetic_dataset, tmp_path / "part", config, progress=False, stop_at=2)
    assert part.step == 2 and part.checkpoint is not None
    rest = train_acoustic(synthetic_dataset, tmp_path / "part", config, progress=False)
    assert rest.step == 6
    assert state_max_diff(full.model.state_dict(), rest.model.state_dict()) < 1e-6
    a = load_checkpoint(tmp_path / "full")
    b = load_checkpoint(tmp_path / "part")
    assert state_max_diff(a["optimizer"]["state"][0], b["optimizer"]["state"][0]) < 1e-6
    # the loss curve continues: steps 2, 4, 6 are logged once each in the resumed run
    steps = [
        json.loads(x)["step"]
        for x in (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()
        if "train/loss" in x
    ]
    assert steps == [2, 4, 6]


def test_fresh_run_refuses_existing_checkpoint(synthetic_dataset, tmp_path):
    config = tiny_config(steps=1, warmup_steps=1)
    train_acoustic(synthetic_dataset, tmp_path / "run", config, progress=False)
    with pytest.raises(UserError, match="already holds a checkpoint"):
        train_acoustic(synthetic_dataset, tmp_path / "run", config, resume=False, progress=False)
    other = dataclasses.replace(config, model=dataclasses.replace(config.model, channels=4))
    with pytest.raises(UserError, match="model config differs"):
        train_acoustic(synthetic_dataset, tmp_path / "run", other, progress=False)
    with pytest.raises(UserError, match="no checkpoint"):
        train_acoustic(synthetic_dataset, tmp_path / "new", config, resume=True, progress=False)


def test_cli_train_and_export(synthetic_dataset, tmp_path, capsys):
    run, out = tmp_path / "run", tmp_path / "export"
    args = ["train", "acoustic", "--data", str(synthetic_dataset), "--output", str(run)]
    args += ["--config", str(ROOT / "configs" / "debug.yaml"), "--no-progress"]
    args += ["--set", "train.steps=3", "--set", "train.valid_every=3"]
    assert main(args) == 0
    assert "step 3/3" in capsys.readouterr().out
    assert main(["export", "acoustic", str(run), "-o", str(out)]) == 0
    assert main(["export", "acoustic", str(run), "-o", str(out)]) == 2  # no silent overwrite
    assert "-f" in capsys.readouterr().err
    assert main(["export", "acoustic", str(run / "checkpoint.pt"), "-o", str(out), "-f"]) == 0
    doc = json.loads((out / "acoustic.json").read_text())
    assert doc["metadata"]["loss"] == "tanh-log-abs" and doc["metadata"]["step"] == 3
    assert doc["instruments"][0] == {"name": "Synth 0", "program": 80}
    assert "optimizer" not in doc
    exported = load_acoustic(out)
    trained = model_from_checkpoint(run / "checkpoint.pt")
    roll = torch.rand(1, 176, 30)
    assert torch.equal(exported(roll, instrument=1), trained(roll, instrument=1))
    # evaluation takes the run directory (its checkpoint) as well as the export
    evaluation = ["evaluate", "acoustic", "--data", str(synthetic_dataset), "--no-progress"]
    assert main([*evaluation, "--model", str(run), "--output", str(tmp_path / "e1")]) == 0
    assert main([*evaluation, "--model", str(out), "--output", str(tmp_path / "e2")]) == 0
    first = json.loads((tmp_path / "e1" / "metrics.json").read_text())["overall"]
    assert first == json.loads((tmp_path / "e2" / "metrics.json").read_text())["overall"]


@pytest.mark.parametrize("group", [False, True], ids=["main", "process-group"])
def test_sigterm_checkpoints_and_resumes(synthetic_dataset, tmp_path, group):
    """SIGTERM to the trainer, or to its whole process group as ``pkill -f`` or a job manager
    sends it (the DataLoader worker included): either way it checkpoints and exits cleanly."""
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "mel2mel", "train", "acoustic", "--data", str(synthetic_dataset)]
    cmd += ["--output", str(run), "--config", str(ROOT / "configs" / "debug.yaml"), "--no-progress"]
    cmd += ["--set", "train.steps=100000", "--set", "train.valid_every=0", "--threads", "1"]
    cmd += ["--set", "train.num_workers=1"]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    metrics = run / "metrics.jsonl"
    deadline = time.monotonic() + 180  # a loaded machine can take a while to the first log line
    while not (metrics.is_file() and metrics.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert metrics.read_text().strip(), "training did not start"
    if group:
        os.killpg(proc.pid, signal.SIGTERM)
    else:
        proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "resume" in out
    step = load_checkpoint(run)["step"]
    assert 0 < step < 100000


def test_run_with_workers_exits_when_done(synthetic_dataset, tmp_path):
    """Workers ignore SIGTERM (so ``pkill -f`` cannot break a checkpoint), so the trainer must
    stop them itself: a finished run exits instead of waiting for them at interpreter exit."""
    cmd = [sys.executable, "-m", "mel2mel", "train", "acoustic", "--data", str(synthetic_dataset)]
    cmd += ["--output", str(tmp_path / "run"), "--config", str(ROOT / "configs" / "debug.yaml")]
    cmd += ["--no-progress", "--threads", "1", "--set", "train.num_workers=1"]
    cmd += ["--set", "train.steps=3", "--set", "train.warmup_steps=1", "--stop-at", "2"]
    cmd += ["--set", "train.valid_every=2", "--set", "train.checkpoint_every=2"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert load_checkpoint(tmp_path / "run")["step"] == 2


def _train_tiny(data: str, run: Path) -> torch.nn.Module:
    return train_acoustic(data, run, tiny_config(steps=4), device="cpu", progress=False).model


@pytest.mark.slow  # 13 s on a quiet 2-core machine, ~20 s on a busy one
def test_two_process_ddp_replicas_stay_identical(synthetic_dataset, tmp_path):
    w0, w1 = train_two_ranks(_train_tiny, synthetic_dataset, tmp_path)
    assert state_max_diff(w0, w1) == 0.0
    state = load_checkpoint(tmp_path / "run")  # written by rank 0 only
    assert state["step"] == 4 and state["metadata"]["world_size"] == 2
    assert state_max_diff(state["model"], w0) == 0.0
    fresh = model_from_checkpoint(state)
    torch.manual_seed(0)
    assert state_max_diff(fresh.state_dict(), w0) == 0.0
    valid = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [v["dist/replica_max_diff"] for v in valid if "dist/replica_max_diff" in v] == [0.0, 0.0]


def test_repeat_oversamples_pieces_by_kind(synthetic_dataset, tmp_path):
    import shutil

    from mel2mel.data.dataset import read_manifest
    from mel2mel.train.data import dataset_instruments, make_datasets

    # two of the train pieces become a strikes piece and a performance
    data = shutil.copytree(synthetic_dataset, tmp_path / "kinds")
    manifest = read_manifest(data)
    train_pieces = [p for p in manifest["pieces"] if p["split"] == "train"]
    train_pieces[0]["augment"] = {"kind": "strikes", "seed": 1}
    train_pieces[1]["augment"] = {"kind": "perform", "seed": 2}
    (data / "manifest.json").write_text(json.dumps(manifest))
    times = {train_pieces[0]["id"]: 3, train_pieces[1]["id"]: 1}  # the others are plain: 2

    def items(**train) -> list[str]:
        config = tiny_config(**train)
        train_set, valid = make_datasets(data, config, dataset_instruments(data))
        assert all(it["split"] == "valid" for it in valid.items)  # valid is never repeated
        return [it["id"] for it in train_set.items]

    once = items()
    twice = items(repeat={"strikes": 3, "plain": 2})
    for item in once:
        assert twice.count(item) == times.get(item.partition("/")[0], 2), item
    assert list(dict.fromkeys(twice)) == once  # the order is kept
    config = tiny_config(repeat={"strikes": 3})
    assert RunConfig.from_dict(config.to_dict()) == config  # saved in checkpoints
    assert len(items(repeat={"texture": 4})) == len(once)  # no such piece: nothing changes
    with pytest.raises(ValueError, match=r"unknown piece kind 'strike'.*strikes"):
        TrainConfig(repeat={"strike": 2})
    with pytest.raises(ValueError, match="whole number"):
        TrainConfig(repeat={"strikes": 0})
    with pytest.raises(ValueError, match="map piece kinds"):
        TrainConfig(repeat=[3])  # type: ignore[arg-type]


def test_loss_terms_and_embedding_noise_change_the_step(synthetic_dataset, tmp_path):
    import shutil

    import numpy as np

    # the same dataset played softly: every note at a quarter of its velocity (pp frames)
    data = shutil.copytree(synthetic_dataset, tmp_path / "soft")
    for path in (data / "rolls").glob("*.npy"):
        np.save(path, np.load(path) // 4)

    def one_step(name: str, **train) -> tuple[dict, TrainResult]:
        config = tiny_config(steps=1, warmup_steps=0, valid_every=1, checkpoint_every=1, **train)
        torch.manual_seed(0)
        result = train_acoustic(data, tmp_path / name, config, progress=False)
        return load_checkpoint(tmp_path / name / "checkpoint.pt")["model"], result

    plain, result = one_step("plain")
    assert 0 <= result.valid["valid/level_db"] < 200
    level, _ = one_step("level", level_weight=5.0)
    quiet, _ = one_step("quiet", quiet_weight=5.0)
    quiet_level, _ = one_step("quiet-level", level_weight=5.0, quiet_level_weight=5.0)
    balanced, _ = one_step("balanced", loss="log-abs", bin_balance=1.0)
    slope, result = one_step("slope", slope_weight=5.0)
    assert 0 < result.valid["valid/slope_db"] < 100
    flux, _ = one_step("flux", flux_weight=5.0)
    varied, _ = one_step("variation", variation_weight=5.0)
    again, _ = one_step("again")
    assert all(torch.equal(plain[k], again[k]) for k in plain)  # the comparison is exact...
    assert any(not torch.equal(plain[k], level[k]) for k in plain)  # ...and the terms count
    assert any(not torch.equal(plain[k], quiet[k]) for k in plain)
    assert any(not torch.equal(level[k], quiet_level[k]) for k in plain)  # pp frames weigh more
    assert any(not torch.equal(plain[k], slope[k]) for k in plain)
    assert any(not torch.equal(plain[k], flux[k]) for k in plain)
    assert any(not torch.equal(plain[k], varied[k]) for k in plain)
    log_abs, _ = one_step("log-abs", loss="log-abs")
    assert any(not torch.equal(log_abs[k], balanced[k]) for k in plain)  # bins weigh apart
    noisy = RunConfig(
        AcousticConfig.preset("debug", embedding_noise=0.5),
        tiny_config(steps=1, warmup_steps=0, valid_every=1, checkpoint_every=1).train,
    )
    torch.manual_seed(0)
    train_acoustic(data, tmp_path / "noisy", noisy, progress=False)
    state = load_checkpoint(tmp_path / "noisy" / "checkpoint.pt")
    assert state["config"]["model"]["embedding_noise"] == 0.5
    assert any(not torch.equal(plain[k], state["model"][k]) for k in plain)
    with pytest.raises(ValueError, match="level_weight"):
        TrainConfig(level_weight=-1)
    with pytest.raises(ValueError, match="slope_weight"):
        TrainConfig(slope_weight=-0.5)
    with pytest.raises(ValueError, match="flux_weight"):
        TrainConfig(flux_weight=-0.5)
    with pytest.raises(ValueError, match="variation_weight"):
        TrainConfig(variation_weight=-0.5)
    with pytest.raises(ValueError, match="quiet_weight"):
        TrainConfig(quiet_weight=0)
    with pytest.raises(ValueError, match="quiet_level_weight"):
        TrainConfig(quiet_level_weight=-1.0)
    with pytest.raises(ValueError, match="bin_balance"):
        TrainConfig(loss="log-abs", bin_balance=1.5)
    with pytest.raises(ValueError, match="log-abs"):
        TrainConfig(bin_balance=0.5)  # the default loss squashes: no squared error to weigh
    with pytest.raises(ValueError, match="floor_margin"):
        TrainConfig(floor_margin=-1.0)
    with pytest.raises(ValueError, match="level_frames"):
        TrainConfig(level_frames="loud")


def test_bin_variances_are_each_instruments_over_its_items(synthetic_dataset):
    import numpy as np

    from mel2mel.data.dataset import CropDataset, item_paths
    from mel2mel.train.data import bin_variances, repeat_items

    train = CropDataset(synthetic_dataset, "train")
    n = len(train.manifest["instruments"])
    var = bin_variances(train, n + 1)
    assert var.shape == (n + 1, C.N_MELS) and np.isnan(var[n]).all()  # no items: NaN
    for k in range(n):
        ids = [it["id"] for it in train.items if it["instrument"] == k]
        mels = np.concatenate([np.load(item_paths(synthetic_dataset, i)["mel"]) for i in ids], 1)
        assert np.allclose(var[k], mels.astype(np.float64).var(axis=1))
    repeat_items(train, {"plain": 3})  # repeated items count once
    assert np.allclose(bin_variances(train, n + 1)[:n], var[:n])
    first = bin_variances(train, n, per_instrument=1)  # one item of each
    k = int(train.items[0]["instrument"])
    one = np.load(item_paths(synthetic_dataset, train.items[0]["id"])["mel"]).astype(np.float64)
    assert np.allclose(first[k], one.var(axis=1))
