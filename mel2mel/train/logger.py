"""Run logging for rank 0: ``metrics.jsonl``, TensorBoard scalars and mel images.

TensorBoard is optional (the ``[train]`` extra): without it the run still writes
``metrics.jsonl``, one JSON object per logged step, which is enough to plot a loss curve.
A resumed run appends to the same files; TensorBoard events after the resume step are purged
so the curve continues without a fold.
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import Any, Protocol

import torch

from mel2mel import constants as C


class _Config(Protocol):
    def to_dict(self) -> dict[str, Any]: ...


MEL_RANGE = (C.LOG_SILENCE, 3.0)  # natural-log mel values mapped to the image's colour range


def mel_to_image(mel: torch.Tensor) -> torch.Tensor:
    """Tensor[M x T] log-mel -> Tensor[3 x M x T] RGB in [0, 1], low frequencies at the bottom."""
    lo, hi = MEL_RANGE
    x = ((mel.float() - lo) / (hi - lo)).clamp(0, 1).flip(0)
    try:
        from matplotlib import colormaps

        rgb = colormaps["magma"](x.numpy())[..., :3]
        return torch.from_numpy(rgb).permute(2, 0, 1).float()
    except ImportError:
        return x.unsqueeze(0).expand(3, -1, -1)


class RunLogger:
    """Writes the logs of one run directory.

    Parameters
    ----------
    run_dir:
        The run directory (created if needed).
    config:
        Written to ``config.yaml`` (if pyyaml is installed) and ``config.json``.
    start_step:
        The step training starts from (TensorBoard events at or after it are purged).
    """

    def __init__(self, run_dir: Path, config: _Config, start_step: int = 0) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        cfg = config.to_dict()
        (self.run_dir / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
        try:
            import yaml

            (self.run_dir / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
        except ImportError:
            pass
        self.metrics = (self.run_dir / "metrics.jsonl").open("a", encoding="utf-8")
        self.writer = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.run_dir / "tb"), purge_step=start_step or None)
        except ImportError:
            warnings.warn(
                "tensorboard is not installed; logging to metrics.jsonl only "
                "(pip install 'mel2mel[train]')",
                stacklevel=2,
            )

    def scalars(self, values: dict[str, float], step: int) -> None:
        """Log named scalars at ``step``."""
        record = {"step": step, "time": round(time.time(), 3), **values}
        self.metrics.write(json.dumps(record) + "\n")
        self.metrics.flush()
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(key, value, step)

    def mel_image(
        self, tag: str, target: torch.Tensor, pred: torch.Tensor, step: int, caption: str = ""
    ) -> None:
        """Log target (top) and prediction (bottom), each Tensor[M x T], as one image."""
        if self.writer is None:
            return
        gap = torch.ones(3, 2, target.shape[-1])
        img = torch.cat([mel_to_image(target), gap, mel_to_image(pred)], dim=1)
        self.writer.add_image(tag + (f"/{caption}" if caption else ""), img, step)

    def close(self) -> None:
        """Flush and close every file."""
        self.metrics.close()
        if self.writer is not None:
            self.writer.close()

    def __enter__(self) -> RunLogger:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
