"""Fast autoregressive generation for :class:`~mel2mel.vocoders.wavenet.WaveNet` on CPU.

Per sample, a WaveNet step is a chain of small matrix products whose cost on a CPU is
dominated by per-operation overhead, so the step is written to issue as few operations as
possible, each one a fused kernel writing into preallocated memory:

* **No recomputation.** Every layer keeps its own queue of past inputs (``d`` slots for
  dilation ``d``); each slot holds the pair ``[h[t], h[t-d]]`` side by side, the order
  alternating every ``d`` steps, so that *both taps* of the dilated convolution are one
  ``addmm`` with a weight matching the current order. The residual update of layer ``l``
  writes straight into the right half-slot of layer ``l + 1``.
* **Conditioning precomputed** for a block of samples and all layers at once (one matrix
  product), with every constant folded in: convolution biases and the residual biases
  (moved through the later layers).
* **Gate in two kernels.** ``tanh(a) sigmoid(b) = (2 sigmoid(2a) - 1) sigmoid(b)``: the
  ``a`` weights are doubled, one in-place sigmoid covers the whole gate, and one ``addcmul``
  writes the (negated) gate where the skip sum will read it; downstream weights are
  negated to match. All skip projections are then a single product after the last layer.
* **The input embedding is a 256-entry table** (``index_select``); sampling is
  Gumbel-max with pre-drawn noise and the temperature folded into the last layer.

About 4 kernels per layer and 10 per sample remain. Running ``B`` streams together costs
little more than one, which :func:`generate_batched` exploits: a long mel is cut into chunks
generated in parallel, each preceded by a warm-up of real conditioning, and joined with short
cross-fades.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np
import torch

from mel2mel import constants as C
from mel2mel.vocoders import mulaw
from mel2mel.vocoders.base import crossfade_curves

if TYPE_CHECKING:  # the model imports this module to generate; typing only here
    from mel2mel.vocoders.wavenet import WaveNet

HOP = C.HOP_LENGTH


@contextlib.contextmanager
def _threads(n: int | None) -> Iterator[None]:
    """Temporarily run torch with ``n`` intra-op threads (one is fastest for one stream)."""
    old = torch.get_num_threads()
    if n is not None and n != old:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != old:
            torch.set_num_threads(old)


class IncrementalGenerator:
    """Cached generation state of ``batch_size`` parallel streams of one WaveNet.

    Parameters
    ----------
    model:
        The WaveNet (its current weights are copied into fused matrices).
    batch_size:
        Number of streams generated together.
    temperature:
        Softmax temperature of the sampling (ignored with ``argmax``).
    argmax:
        Take the most likely class instead of sampling.
    """

    def __init__(
        self, model: WaveNet, batch_size: int, temperature: float = 1.0, argmax: bool = False
    ) -> None:
        if temperature <= 0:
            raise ValueError("temperature must be positive (use argmax for greedy decoding)")
        self.model = model
        self.batch_size = batch_size
        self.argmax = argmax
        self.dilations = model.config.dilations
        self.t = 0
        with torch.inference_mode():
            offsets = self._fuse_weights(model, 1.0 if argmax else 1.0 / temperature)
            self._allocate_state(offsets)

    def _fuse_weights(self, model: WaveNet, scale: float) -> list[torch.Tensor]:
        """Turn the model's weights into the matrices of one step; returns the residual
        offsets ``offset_l`` (the residual stream is kept as ``h_l - offset_l``)."""
        cfg = model.config
        r, g, h, n_layers = (
            cfg.residual_channels,
            cfg.gate_channels,
            cfg.gate_channels // 2,
            cfg.layers,
        )
        p = {k: v.detach().float() for k, v in model.state_dict().items()}
        dev = p["embed.weight"].device
        double_a = torch.cat([torch.full((h,), 2.0), torch.ones(h)]).to(dev)
        offsets = [torch.zeros(r, device=dev)]
        for layer in range(n_layers - 1):
            offsets.append(offsets[-1] + p[f"res.{layer}.bias"])
        cond_w = p["cond.weight"][:, :, 0].T.clone()  # [Cc x L*G]
        cond_b = p["cond.bias"].clone()
        self.w_dil: list[tuple[torch.Tensor, torch.Tensor]] = []
        for layer in range(n_layers):
            w = p[f"dilated.{layer}.weight"]  # [G x R x 2]: tap 0 reads t - d, tap 1 reads t
            past, cur = w[:, :, 0].T * double_a, w[:, :, 1].T * double_a
            # Slot order [h[t], h[t-d]] on even passes over the queue, [h[t-d], h[t]] on odd.
            self.w_dil.append((torch.cat([cur, past]), torch.cat([past, cur])))
            sl = slice(layer * g, (layer + 1) * g)
            folded = offsets[layer] @ (w[:, :, 0] + w[:, :, 1]).T
            cond_b[sl] = (cond_b[sl] + p[f"dilated.{layer}.bias"] + folded) * double_a
            cond_w[:, sl] *= double_a
        self.g = g
        self.cond_w, self.cond_b = cond_w.contiguous(), cond_b
        # The step computes q = -gate, so every matrix reading the gate is negated.
        self.w_res = [-p[f"res.{i}.weight"][:, :, 0].T.contiguous() for i in range(n_layers - 1)]
        self.w_skip = -p["skip.weight"][:, :, 0].T.contiguous()
        self.b_skip = p["skip.bias"]
        self.w1 = p["out1.weight"][:, :, 0].T.contiguous()
        self.b1 = p["out1.bias"]
        self.w2 = (p["out2.weight"][:, :, 0].T * scale).contiguous()
        self.b2 = p["out2.bias"] * scale
        self.embed = p["embed.weight"].contiguous()
        self.classes = mulaw.class_table().to(dev)
        return offsets

    def _allocate_state(self, offsets: list[torch.Tensor]) -> None:
        """Queues, work buffers, and every view the step needs (made once, not per step)."""
        cfg, b, dev = self.model.config, self.batch_size, self.embed.device
        r, g, h, n_layers = (
            cfg.residual_channels,
            cfg.gate_channels,
            cfg.gate_channels // 2,
            cfg.layers,
        )
        # Layer l's queue: d slots of [B x 2R]; before the start, h_l = 0, stored as -offset_l.
        self.slots = [(-offsets[i]).repeat(d, b, 2) for i, d in enumerate(self.dilations)]
        halves = [[(s[:, :r], s[:, r:]) for s in slots] for slots in self.slots]
        self.period = math.lcm(*(2 * d for d in self.dilations))
        # schedule[t % period][l] = (queue slot, the half receiving h_l[t], tap weights)
        self.schedule = [
            [
                (self.slots[i][t % d], halves[i][t % d][(t // d) % 2], self.w_dil[i][(t // d) % 2])
                for i, d in enumerate(self.dilations)
            ]
            for t in range(self.period)
        ]
        self.z = torch.empty(b, g, device=dev)
        self.za, self.zb = self.z[:, :h], self.z[:, h:]
        self.q = torch.empty(b, n_layers * h, device=dev)
        self.q_views = [self.q[:, i * h : (i + 1) * h] for i in range(n_layers)]
        self.cond_now = torch.empty(b, n_layers * g, device=dev)
        self.cond_views = [self.cond_now[:, i * g : (i + 1) * g] for i in range(n_layers)]
        self.s = torch.empty(b, cfg.skip_channels, device=dev)
        self.o1 = torch.empty(b, cfg.output_channels, device=dev)
        self.logits = torch.empty(b, mulaw.NUM_CLASSES, device=dev)
        self.prev = torch.full((b,), mulaw.SILENCE_CLASS, dtype=torch.long, device=dev)

    def conditioning(self, mel: torch.Tensor, start: int, end: int) -> torch.Tensor:
        """Per-layer conditioning of frames ``[start, end)`` of ``mel``.

        Parameters
        ----------
        mel: Tensor[B x N_MELS x T]
            The whole mel; up to ``context_frames`` frames around the range are read so the
            result equals that of the whole mel.

        Returns
        -------
        Tensor[128*(end-start) x B x L*G]: gate pre-activation offsets, constants folded in.
        """
        ctx = self.model.upsample.context_frames
        lo, hi = max(0, start - ctx), min(mel.shape[-1], end + ctx)
        feats = self.model.conditioning(mel[..., lo:hi].float())
        feats = feats[..., (start - lo) * HOP : (end - lo) * HOP]
        n, b = feats.shape[-1], feats.shape[0]
        z = torch.addmm(self.cond_b, feats.permute(2, 0, 1).reshape(n * b, -1), self.cond_w)
        return z.view(n, b, -1)

    def run(
        self,
        cond: torch.Tensor,
        noise: torch.Tensor | None = None,
        forced: torch.Tensor | None = None,
        logits_out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Generate ``n`` samples per stream, continuing from the current state.

        Parameters
        ----------
        cond: Tensor[n x B x L*G]
            From :meth:`conditioning`.
        noise: Tensor[n x B x 256], optional
            Gumbel noise (``None`` with ``argmax``).
        forced: LongTensor[n x B], optional
            Teacher forcing: the input class at each step (the previous sample's class)
            instead of the generated one.
        logits_out: Tensor[n x B x 256], optional
            Receives the (temperature-scaled) logits of every step.

        Returns
        -------
        LongTensor[n x B] of generated classes.
        """
        n = cond.shape[0]
        samples = torch.empty(n, self.batch_size, dtype=torch.long, device=cond.device)
        z, za, zb, q, s, o1, logits = self.z, self.za, self.zb, self.q, self.s, self.o1, self.logits
        cond_views, q_views, w_res = self.cond_views, self.q_views, self.w_res
        last = len(self.dilations) - 1
        embed, schedule, period = self.embed, self.schedule, self.period
        prev = self.prev
        addmm, addcmul, index_select = torch.addmm, torch.addcmul, torch.index_select
        for i in range(n):
            row = schedule[self.t % period]
            if forced is not None:
                prev = forced[i]
            index_select(embed, 0, prev, out=row[0][1])
            self.cond_now.copy_(cond[i])
            for layer in range(last + 1):
                slot, cur, w = row[layer]
                addmm(cond_views[layer], slot, w, out=z)
                z.sigmoid_()
                addcmul(zb, za, zb, value=-2.0, out=q_views[layer])
                if layer < last:
                    addmm(cur, q_views[layer], w_res[layer], out=row[layer + 1][1])
            addmm(self.b_skip, q, self.w_skip, out=s).relu_()
            addmm(self.b1, s, self.w1, out=o1).relu_()
            addmm(self.b2, o1, self.w2, out=logits)
            if logits_out is not None:
                logits_out[i].copy_(logits)
            if noise is not None:
                logits.add_(noise[i])
            prev = torch.argmax(logits, 1, out=samples[i])
            self.t += 1
        self.prev = prev.clone()
        return samples

    def noise(self, n: int, generator: torch.Generator | None) -> torch.Tensor | None:
        """Gumbel noise for ``n`` steps, drawn one frame at a time (so chunking never changes
        the random stream); ``None`` in argmax mode."""
        if self.argmax:
            return None
        dev = self.embed.device
        u = torch.empty(n, self.batch_size, mulaw.NUM_CLASSES, device=dev)
        for i in range(0, n, HOP):
            u[i : i + HOP].uniform_(generator=generator)
        return u.clamp_(1e-10, 1.0 - 1e-7).log_().neg_().log_().neg_()  # Gumbel(0, 1)


def _block_frames(batch_size: int) -> int:
    # Keeps the precomputed conditioning of a block near 40 MB at the default size.
    return max(1, 32 // batch_size)


def _blocks(
    model: WaveNet,
    mel: torch.Tensor,
    start: int,
    end: int,
    temperature: float,
    argmax: bool,
    seed: int | None,
) -> Iterator[torch.Tensor]:
    """Generate frames ``[start, end)`` of ``mel`` (Tensor[B x N_MELS x T]) block by block,
    yielding Tensor[B x 128*frames] audio; the blocks lie on a fixed grid from ``start``.

    The sample loop runs on one thread (OpenMP hand-offs on such small kernels cost more
    than they save, and collapse when another process holds a core) while a second Python
    thread prepares the next block's conditioning and noise, so two cores are used.
    """
    b = mel.shape[0]
    gen = None
    if not argmax:
        gen = torch.Generator(device=mel.device)
        gen.manual_seed(seed if seed is not None else int(torch.randint(2**62, ()).item()))
    step = _block_frames(b)
    grid = [(f0, min(end, f0 + step)) for f0 in range(start, end, step)]
    with _threads(1), ThreadPoolExecutor(max_workers=1) as pool:
        state = IncrementalGenerator(model, b, temperature, argmax)

        def prepare(f0: int, f1: int) -> tuple[torch.Tensor, torch.Tensor | None]:
            with torch.inference_mode():
                cond = state.conditioning(mel, f0, f1)
                return cond, state.noise(cond.shape[0], gen)

        pending = pool.submit(prepare, *grid[0]) if grid else None
        for i in range(len(grid)):
            cond, noise = pending.result()
            if i + 1 < len(grid):
                pending = pool.submit(prepare, *grid[i + 1])
            with torch.inference_mode():
                classes = state.run(cond, noise)
                audio = state.classes[classes.T]
            yield audio


def generate(
    model: WaveNet,
    mel: torch.Tensor,
    *,
    temperature: float = 1.0,
    argmax: bool = False,
    seed: int | None = None,
) -> torch.Tensor:
    """Single-pass cached generation of every mel in the batch, one sample at a time.

    Parameters
    ----------
    mel: Tensor[B x N_MELS x T]

    Returns
    -------
    Tensor[B x 128*T] audio in [-1, 1].
    """
    mel = mel.to(next(model.parameters()).device)
    parts = list(_blocks(model, mel, 0, mel.shape[-1], temperature, argmax, seed))
    return torch.cat(parts, dim=1)


def generate_stream(
    model: WaveNet,
    mel: torch.Tensor,
    chunk_frames: int = 25,
    *,
    temperature: float = 1.0,
    argmax: bool = False,
    seed: int | None = 0,
) -> Iterator[np.ndarray]:
    """:func:`generate` of one mel (Tensor[1 x N_MELS x T]), yielded as float32 arrays of
    ``128 * chunk_frames`` samples; with the same seed the result is identical."""
    if mel.shape[0] != 1:
        raise ValueError("generate_stream takes a single mel (batch size 1)")
    mel = mel.to(next(model.parameters()).device)
    pending: list[np.ndarray] = []
    have, want = 0, chunk_frames * HOP
    for block in _blocks(model, mel, 0, mel.shape[-1], temperature, argmax, seed):
        pending.append(block[0].cpu().numpy())
        have += block.shape[1]
        while have >= want:
            joined = np.concatenate(pending)
            yield joined[:want]
            pending, have = [joined[want:]], have - want
    if have:
        yield np.concatenate(pending)


def generate_batched(
    model: WaveNet,
    mel: torch.Tensor | np.ndarray,
    *,
    chunk_frames: int | None = None,
    max_batch: int = 64,
    warmup_frames: int = 4,
    crossfade_frames: int = 2,
    temperature: float = 1.0,
    argmax: bool = False,
    seed: int | None = 0,
) -> torch.Tensor:
    """Generate one long mel as many chunks in parallel (one batch), cross-faded at the seams.

    Chunk ``k`` owns frames ``[k c, (k+1) c)``; it is generated from silence starting
    ``warmup_frames + crossfade_frames`` earlier (with the real conditioning), the warm-up is
    dropped, and its first ``crossfade_frames`` are cross-faded into the end of chunk ``k - 1``
    (linearly, which keeps ``|audio| <= 1``).

    Parameters
    ----------
    mel: Tensor[N_MELS x T] or Tensor[1 x N_MELS x T]
    chunk_frames:
        Frames per chunk; by default just enough for ``max_batch`` chunks (at least 16).
    max_batch:
        Chunks generated together; more chunks are generated in several passes.

    Returns
    -------
    Tensor[128*T] audio in [-1, 1].
    """
    mel = torch.as_tensor(mel).reshape(C.N_MELS, -1).to(next(model.parameters()).device)
    total = mel.shape[-1]
    c = chunk_frames or max(16, -(-total // max_batch))
    k_chunks = -(-total // c)
    pre, ctx = warmup_frames + crossfade_frames, model.upsample.context_frames
    silence = mel.new_full((C.N_MELS, 1), C.LOG_SILENCE)
    padded = torch.cat(
        [silence.expand(-1, pre + ctx), mel, silence.expand(-1, k_chunks * c - total + ctx)], 1
    )
    outputs = []
    for first in range(0, k_chunks, max_batch):
        ks = range(first, min(k_chunks, first + max_batch))
        windows = torch.stack([padded[:, k * c : k * c + pre + c + 2 * ctx] for k in ks])
        pass_seed = None if seed is None else seed + first
        parts = _blocks(model, windows, ctx, ctx + pre + c, temperature, argmax, pass_seed)
        outputs.append(torch.cat(list(parts), dim=1)[:, warmup_frames * HOP :])
    chunks = torch.cat(outputs)  # [K x (crossfade + c) * HOP]
    xf = crossfade_frames * HOP
    fade_out, fade_in = (torch.from_numpy(v).to(chunks) for v in crossfade_curves(xf, "linear"))
    audio = chunks[:, xf:].reshape(-1).clone()
    for k in range(1, k_chunks):
        seam = k * c * HOP
        audio[seam - xf : seam] = audio[seam - xf : seam] * fade_out + chunks[k, :xf] * fade_in
    return audio[: total * HOP]


def teacher_forced_logits(model: WaveNet, inputs: torch.Tensor, mel: torch.Tensor) -> torch.Tensor:
    """The incremental path's logits with given inputs (to check it against ``forward``).

    Parameters
    ----------
    inputs: LongTensor[B x N], N a multiple of 128
    mel: Tensor[B x N_MELS x T]

    Returns
    -------
    Tensor[B x 256 x N], equal to ``model(inputs, mel)`` up to float rounding.
    """
    b, n = inputs.shape
    with torch.inference_mode():
        state = IncrementalGenerator(model, b, argmax=True)
        cond = state.conditioning(mel, 0, n // HOP)
        logits = torch.empty(n, b, mulaw.NUM_CLASSES)
        state.run(cond, forced=inputs.T.contiguous(), logits_out=logits)
    return logits.permute(1, 2, 0)
