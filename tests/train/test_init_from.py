"""``train.init_from``: a fresh run takes every tensor whose name and shape match."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mel2mel.errors import UserError
from mel2mel.models.acoustic import Mel2Mel
from mel2mel.models.config import AcousticConfig
from mel2mel.models.export import save_pretrained
from mel2mel.train.acoustic_loop import train_acoustic
from mel2mel.train.config import RunConfig, TrainConfig, load_run_config
from mel2mel.train.loop import init_from_pretrained

pytestmark = pytest.mark.usefixtures("single_thread")

ROOT = Path(__file__).resolve().parents[2]
SHARED = ["film_in.beta.bias", "film_in.gamma.bias", "film_out.beta.bias", "film_out.gamma.bias"]
FRESH = ["embedding.weight", "film_in.beta.weight", "film_in.gamma.weight"]
FRESH += ["film_out.beta.weight", "film_out.gamma.weight"]


def _source(tmp_path: Path) -> tuple[Mel2Mel, Path]:
    torch.manual_seed(1)
    src = Mel2Mel(AcousticConfig.preset("debug", n_instruments=2))
    with torch.no_grad():
        for p in src.parameters():
            p.add_(torch.randn_like(p))  # FiLM starts at zero: make every tensor distinctive
    save_pretrained(src, tmp_path / "src")
    return src, tmp_path / "src"


def test_init_from_copies_matching_tensors(tmp_path):
    src, prefix = _source(tmp_path)
    torch.manual_seed(2)
    dst = Mel2Mel(AcousticConfig.preset("debug", n_instruments=5, embedding_dim=10))
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    copied, fresh = init_from_pretrained(dst, prefix)
    assert fresh == FRESH
    assert set(copied) == set(before) - set(FRESH) and set(SHARED) <= set(copied)
    ours, theirs = dst.state_dict(), src.state_dict()
    for k in copied:
        assert torch.equal(ours[k], theirs[k]), k
    for k in fresh:
        assert torch.equal(ours[k], before[k]), k
    # The same from a file name of the export.
    again = Mel2Mel(AcousticConfig.preset("debug", n_instruments=5, embedding_dim=10))
    assert init_from_pretrained(again, f"{prefix}.safetensors")[0] == copied
    with pytest.raises(UserError, match="no checkpoint or exported weights"):
        init_from_pretrained(again, tmp_path / "nothing")
    other = Mel2Mel(AcousticConfig.preset("debug", channels=4, lstm_hidden=4, n_mels=8))
    other_prefix = tmp_path / "other"
    save_pretrained(other, other_prefix)
    unrelated = Mel2Mel(
        AcousticConfig.preset("debug", n_instruments=3, roll_channels=10, channels=6, n_mels=3)
    )
    with pytest.raises(UserError, match="no tensor"):
        init_from_pretrained(unrelated, other_prefix)


def test_training_starts_from_the_source(tmp_path, synthetic_dataset, capsys):
    src, prefix = _source(tmp_path)
    config = RunConfig(
        AcousticConfig.preset("debug", embedding_dim=10),
        TrainConfig(
            steps=1,
            batch_size=2,
            crop_frames=32,
            warmup_steps=0,
            lr=1e-9,
            min_lr=0.0,
            num_workers=0,
            valid_every=0,
            init_from=str(prefix),
        ),
    )
    result = train_acoustic(synthetic_dataset, tmp_path / "run", config, progress=False)
    assert "initialized 16 tensor(s)" in capsys.readouterr().out
    w = result.model.state_dict()["lstm.weight_hh_l0"]
    assert torch.allclose(w, src.state_dict()["lstm.weight_hh_l0"], atol=1e-6)
    # The checkpoint records where the run started from.
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert state["config"]["train"]["init_from"] == str(prefix)


def test_space100_config_parses():
    config = load_run_config(ROOT / "configs" / "space100.yaml")
    assert config.model.embedding_dim == 10
    assert config.train.init_from == "mel2mel/pretrained/acoustic"


def test_embedding_starts_small_and_learns_faster_when_asked():
    from mel2mel.train.loop import make_optimizer

    torch.manual_seed(0)
    config = AcousticConfig.preset("debug", n_instruments=100, embedding_dim=10)
    wide = Mel2Mel(config)
    small = Mel2Mel(AcousticConfig.preset("debug", n_instruments=100, embedding_dim=10,
                                          embedding_init_std=0.1))  # fmt: skip
    assert 0.9 < wide.embedding.weight.std().item() < 1.1
    assert 0.09 < small.embedding.weight.std().item() < 0.11
    with pytest.raises(ValueError, match="embedding_init_std"):
        AcousticConfig(embedding_init_std=0.0)
    plain = make_optimizer(small, RunConfig(config, TrainConfig(lr=0.002)))
    assert len(plain.param_groups) == 2  # as before: earlier checkpoints still resume
    fast = make_optimizer(small, RunConfig(config, TrainConfig(lr=0.002, embedding_lr_scale=10)))
    assert len(fast.param_groups) == 3
    table = fast.param_groups[2]
    assert table["params"] == [small.embedding.weight] and table["lr"] == pytest.approx(0.02)
    assert all(small.embedding.weight is not p for g in fast.param_groups[:2] for p in g["params"])
    with pytest.raises(ValueError, match="embedding_lr_scale"):
        TrainConfig(embedding_lr_scale=0)
    assert table["weight_decay"] == 0.0
    decayed = RunConfig(config, TrainConfig(lr=0.002, embedding_weight_decay=0.5))
    table = make_optimizer(small, decayed).param_groups[2]
    assert table["params"] == [small.embedding.weight] and table["weight_decay"] == 0.5
    assert table["lr"] == pytest.approx(0.002)
    with pytest.raises(ValueError, match="embedding_weight_decay"):
        TrainConfig(embedding_weight_decay=-1)


def test_embedding_noise_only_in_training_and_scaled_to_the_table():
    config = AcousticConfig.preset("debug", n_instruments=100, embedding_dim=10,
                                   embedding_init_std=0.1, embedding_noise=0.5)  # fmt: skip
    torch.manual_seed(0)
    model = Mel2Mel(config)
    roll = torch.zeros(64, config.roll_channels, 4)
    rows = torch.full((64,), 3)
    table = model.embed(3)
    noisy = model.conditioning(roll, instrument=rows) - table
    spread = model.embedding.weight.detach().std(dim=0, correction=0)
    assert torch.allclose(noisy.std(dim=0) / spread, torch.full((10,), 0.5), atol=0.15)
    with torch.no_grad():
        model.embedding.weight.mul_(100.0)  # a larger table gets larger noise
    assert (model.conditioning(roll, instrument=rows) - model.embed(3)).std() > 20 * noisy.std()
    model.eval()
    assert torch.equal(model.conditioning(roll, instrument=rows), model.embed(3).expand(64, -1))
    model.train()
    free = torch.randn(64, 10)
    assert torch.equal(model.conditioning(roll, embedding=free), free)  # given points: no noise
    with pytest.raises(ValueError, match="embedding_noise"):
        AcousticConfig(embedding_noise=-0.1)
