"""Fast CPU inference for :class:`~mel2mel.models.acoustic.Mel2Mel` (one LSTM layer).

Three exact rewrites and one opt-in approximation, for inference only:

1. **Folding.** With one embedding for the whole batch, ``input conv -> FiLM -> W_ih`` is one
   affine map of the coded roll and ``FiLM -> output conv`` another, so both are folded into the
   LSTM's input weights (``4H x K``, K the coded roll's rows: 176, or 352 with the
   ``linear+log`` velocity coding) and one ``N_MELS x 2H`` output matrix: the input conv,
   both FiLM layers and a third of the input projection's work disappear.
2. **Unused roll channels.** Channels that are zero everywhere in the batch (pitches the
   piece never plays) are dropped from the roll and from the folded input weights.
3. **One call per direction.** The two directions of the BiLSTM run as two unidirectional
   LSTMs (the backward one on the time-reversed sequence), optionally in two threads with
   one core each: the LSTM is sequential in time, so this is how one sequence can use a
   second core without a barrier between the cores at every step.
4. **One-sided windows (the approximation).** With ``chunk_frames``, each direction runs on
   a batch of windows of ``context_frames + core`` frames. The forward direction needs
   context only *before* a core and the backward one only *after* it, so every output frame
   gets the same guaranteed context as with symmetric ``core + 2 * context`` windows for half
   the wasted frames. Batching the windows reuses each read of the recurrent weights for all
   of them (with one sequence the LSTM is bound by memory bandwidth, not arithmetic). Only
   frames with notes count as context, so a window in a tail or a long rest reaches back to
   the notes still ringing there (:func:`one_sided_windows`).

A model with a nonlinear readout (``head_channels``) folds the readout's first layer and
FiLM beside the output matrix (:func:`fold_static`) and adds its ReLU and last layer; a
``detail_gate`` folds there too. A model with ``harmonic_detail`` adds its detail
(:meth:`Mel2Mel.readout`, frame by frame, so exact in any window) to every path's output; one
with ``velocity_gain`` adds its gain, computed on the whole roll, so exact in these windows too
(:func:`symmetric_windows` runs each window whole, and there a window that starts in a long
rest holds the level only from its own frames).

Without ``chunk_frames`` the result equals :meth:`Mel2Mel.forward` up to float rounding
(~1e-5 nats). Stacked LSTMs (``lstm_layers > 1``) are not supported here: the second layer's
forward direction depends on the first layer's backward one everywhere.
"""

from __future__ import annotations

import bisect
import functools
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import torch

from mel2mel.audio import floor_log_mel

if TYPE_CHECKING:
    from mel2mel.models.acoustic import Mel2Mel


@dataclass(frozen=True)
class DirectionWeights:
    """Weights of one LSTM direction in ``torch.lstm`` order (gates i, f, g, o)."""

    w_ih: torch.Tensor  # 4H x K
    w_hh: torch.Tensor  # 4H x H
    b_ih: torch.Tensor  # 4H
    b_hh: torch.Tensor  # 4H

    def params(self) -> list[torch.Tensor]:
        return [self.w_ih, self.w_hh, self.b_ih, self.b_hh]


def supports_fast_path(model: Mel2Mel) -> bool:
    """Whether :func:`fast_forward` applies (one bidirectional LSTM layer)."""
    return model.config.lstm_layers == 1


def lstm_directions(model: Mel2Mel) -> list[DirectionWeights]:
    """``[forward, backward]`` weights of the model's (single-layer) BiLSTM."""
    names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
    return [
        DirectionWeights(*(getattr(model.lstm, f"{n}_l0{suffix}") for n in names))
        for suffix in ("", "_reverse")
    ]


def fold_static(
    model: Mel2Mel, embedding: torch.Tensor
) -> tuple[list[DirectionWeights], torch.Tensor, torch.Tensor]:
    """Fold the input conv, both FiLMs and every 1x1 map of the readout for one embedding.

    Parameters
    ----------
    model:
        A Mel2Mel with one LSTM layer and no frontend convolutions.
    embedding: Tensor[E]

    Returns
    -------
    (directions, w_out, b_out):
        ``[forward, backward]`` LSTM weights whose input is the coded roll (``K`` rows,
        :meth:`Mel2Mel.code_roll`), and
        Tensor[R x 2H], Tensor[R] with ``w_out @ h + b_out`` for the hidden states ``h`` of
        both directions, concatenated: the log-mel before the readout's correction and the
        detail (``N_MELS`` rows), then the detail gate (``N_MELS`` rows, ``detail_gate``),
        then the note modulation's coefficients (unscaled, ``note_modulation``), then the
        readout's hidden pre-activation (``D`` rows, ``head_channels``), whose output
        is ``head.out.weight @ relu(...) + head.out.bias``.
    """
    e = embedding.reshape(1, -1)
    gamma_in, beta_in = (x.reshape(-1) for x in model.film_in.coefficients(e))
    gamma_out, beta_out = (x.reshape(-1) for x in model.film_out.coefficients(e))
    w_in = model.input.weight[..., 0]  # C x K
    shift = torch.addcmul(beta_in, gamma_in, model.input.bias)  # C: FiLM of the conv bias
    directions = [
        DirectionWeights(
            (d.w_ih * gamma_in) @ w_in,  # W_ih diag(gamma) W_in
            d.w_hh,
            torch.addmv(d.b_ih, d.w_ih, shift),
            d.b_hh,
        )
        for d in lstm_directions(model)
    ]
    maps = [model.output]  # 1x1 convolutions of the modulated states
    if model.harmonic is not None and model.harmonic.gate is not None:
        maps.append(model.harmonic.gate)
    if model.modulation is not None:
        maps.append(model.modulation.coefficients)
    if model.head is not None:
        maps.append(model.head.hidden)
    w = torch.cat([m.weight[..., 0] for m in maps])  # R x 2H
    b = torch.addmv(torch.cat([m.bias for m in maps]), w, beta_out)
    w = w * gamma_out
    if model.head is not None:  # the readout's own FiLM on its hidden rows
        gamma_h, beta_h = (x.reshape(-1) for x in model.head.film.coefficients(e))
        d = gamma_h.numel()
        w = torch.cat([w[:-d], gamma_h[:, None] * w[-d:]])
        b = torch.cat([b[:-d], torch.addcmul(beta_h, gamma_h, b[-d:])])
    return directions, w, b


class WindowBatch(NamedTuple):
    """Windows of one width, run as one batch: ``(window start, core start, core end)``."""

    width: int
    windows: list[tuple[int, int, int]]


def one_sided_windows(
    total: int,
    chunk_frames: int | None,
    context_frames: int,
    active: torch.Tensor | None = None,
) -> list[WindowBatch]:
    """Windows for a forward-in-time recurrence with ``context_frames`` of left context.

    The cores (the frames whose output is kept) are the fewest of at most ``chunk_frames``
    frames, of (nearly) equal size, each in a window of about ``core + context_frames``
    frames, all run as one batch; a window that would begin before frame 0 begins there
    instead (the true start needs no context).

    Silence does not count as context: the LSTM remembers notes that still ring through a
    tail or a long rest for seconds, so given ``active`` a window reaches back until its
    context holds ``context_frames`` frames with notes (or the start). Windows that this
    makes much wider than the others go to a second batch; consecutive cores of one silence
    share one window there.

    Parameters
    ----------
    total:
        Frames T.
    chunk_frames, context_frames:
        Core and context sizes; ``chunk_frames=None`` is one exact window.
    active: Tensor[T] of bool
        Frames in which some note is on; ``None`` counts every frame.

    Returns
    -------
    One or two :class:`WindowBatch`; together their cores cover ``[0, total)`` once.
    """
    if chunk_frames is None or total <= chunk_frames + context_frames:
        return [WindowBatch(total, [(0, 0, total)])]
    n = -(-total // chunk_frames)
    core = -(-total // n)
    counts = list(range(total + 1))  # counts[t]: frames with notes before frame t
    if active is not None:
        counts = [0, *active.long().cumsum(0).tolist()]
    plain: list[tuple[int, int, int]] = []
    extended: list[tuple[int, int, int]] = []
    for s in range(0, total, core):
        e = min(s + core, total)
        w = 0  # the latest start with context_frames frames with notes in [w, s), else 0
        if counts[s] >= context_frames:
            w = bisect.bisect_right(counts, counts[s] - context_frames, 0, s + 1) - 1
        if e - w <= core + context_frames + context_frames // 2:  # a few silent frames
            plain.append((w, s, e))
        elif extended and extended[-1][0] == w and extended[-1][2] == s:
            extended[-1] = (w, extended[-1][1], e)  # the same silence as the previous core
        else:
            extended.append((w, s, e))
    batches = []
    for group in (plain, extended):
        if group:
            width = min(max(e - w for w, _, e in group), total)
            starts = [max(min(w, total - width), 0) for w, _, _ in group]
            batches.append(
                WindowBatch(width, [(x, s, e) for x, (_, s, e) in zip(starts, group, strict=True)])
            )
    return batches


def run_direction(
    x: torch.Tensor, weights: DirectionWeights, batches: list[WindowBatch]
) -> torch.Tensor:
    """One LSTM direction, forward in time, over batches of windows of ``x``.

    Parameters
    ----------
    x: Tensor[T x B x K]
        Input sequences, time first (the oneDNN LSTM's native layout).
    weights:
        The direction's weights (``w_ih`` is ``4H x K``).
    batches:
        From :func:`one_sided_windows`.

    Returns
    -------
    Tensor[T x B x H]
        Hidden states; each core's frames come from its window's run.
    """
    total, batch, _ = x.shape
    hidden = weights.w_hh.shape[1]
    if len(batches) == 1 and len(batches[0].windows) == 1:
        return _lstm(x.contiguous(), weights)
    out = x.new_empty(total, batch, hidden)
    for width, windows in batches:
        inp = torch.cat([x[w : w + width] for w, _, _ in windows], dim=1)  # W x nB x K
        res = _lstm(inp, weights)
        for i, (w, s, e) in enumerate(windows):
            out[s:e] = res[s - w : e - w, i * batch : (i + 1) * batch]
    return out


def _lstm(x: torch.Tensor, weights: DirectionWeights) -> torch.Tensor:
    """Tensor[T x B x K] -> Tensor[T x B x H] through a unidirectional LSTM, zero state."""
    h0 = x.new_zeros(1, x.shape[1], weights.w_hh.shape[1])
    return torch.lstm(x, (h0, h0), weights.params(), True, 1, 0.0, False, False, False)[0]


def _run_both(jobs: list[Callable[[], torch.Tensor]], workers: int) -> list[torch.Tensor]:
    """Run the two direction jobs; with 2 workers in two threads, each with half of the
    caller's intra-op threads (at least one), so that the cores are not oversubscribed."""
    if workers < 2:
        return [job() for job in jobs]
    share = max(1, torch.get_num_threads() // 2)
    results: list[torch.Tensor | None] = [None, None]
    errors: list[BaseException] = []

    def work(i: int) -> None:
        old = torch.get_num_threads()  # per OS thread (OpenMP), restored for the caller
        torch.set_num_threads(share)
        try:
            with torch.inference_mode():  # a thread-local mode: not inherited by the helper
                results[i] = jobs[i]()
        except BaseException as err:  # re-raised in the caller
            errors.append(err)
        finally:
            torch.set_num_threads(old)

    helper = threading.Thread(target=work, args=(1,), name="mel2mel-lstm-backward")
    helper.start()
    work(0)
    helper.join()
    if errors:
        raise errors[0]
    return [r for r in results if r is not None]


def bilstm(
    x: torch.Tensor,
    directions: list[DirectionWeights],
    *,
    chunk_frames: int | None,
    context_frames: int,
    workers: int = 1,
    active: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Both directions of a BiLSTM layer, each on its own one-sided windows.

    Parameters
    ----------
    x: Tensor[T x B x K]
    directions:
        ``[forward, backward]`` weights.
    chunk_frames, context_frames:
        Window cores and one-sided context (:func:`one_sided_windows`); ``None``: exact.
    workers:
        2 runs the directions in two threads, each with half of torch's intra-op threads.
    active: Tensor[T] of bool
        Frames with notes, for the silence rule of :func:`one_sided_windows`.

    Returns
    -------
    (forward, backward): each Tensor[T x B x H], in the original time order.
    """
    total = x.shape[0]
    fwd_windows = one_sided_windows(total, chunk_frames, context_frames, active)
    bwd_windows = one_sided_windows(
        total, chunk_frames, context_frames, None if active is None else active.flip(0)
    )
    fwd, bwd = directions
    h_fwd, h_bwd = _run_both(
        [
            lambda: run_direction(x, fwd, fwd_windows),
            lambda: run_direction(x.flip(0), bwd, bwd_windows),
        ],
        workers,
    )
    return h_fwd, h_bwd.flip(0)


@torch.inference_mode()
def fast_forward(
    model: Mel2Mel,
    roll: torch.Tensor,
    embedding: torch.Tensor,
    *,
    chunk_frames: int | None = None,
    context_frames: int = 250,
    workers: int = 1,
) -> torch.Tensor:
    """:meth:`Mel2Mel.forward` through the rewrites of the module docstring.

    Parameters
    ----------
    model:
        A Mel2Mel with one LSTM layer (see :func:`supports_fast_path`).
    roll: Tensor[B x 176 x T]
    embedding: Tensor[B x E] or Tensor[B x E x T]
        Already checked against ``roll`` by the caller. One vector shared by the whole batch
        is folded; otherwise the unfolded layers run (same windows and threads).
    chunk_frames, context_frames, workers:
        As in :func:`bilstm`.

    Returns
    -------
    Tensor[B x N_MELS x T]
    """
    if not supports_fast_path(model):
        raise ValueError("the fast path needs a single-layer BiLSTM")
    raw = roll
    roll = model.code_roll(roll.to(model.input.weight.dtype))
    batch, _, total = roll.shape
    notes = roll.ne(0)  # B x K x T
    run = functools.partial(
        bilstm,
        chunk_frames=chunk_frames,
        context_frames=context_frames,
        workers=workers,
        active=notes.any(1).any(0),  # T: frames with notes
    )
    shared = embedding.dim() == 2 and bool((embedding == embedding[:1]).all())
    if shared and model.config.frontend_layers == 0:
        directions, w_out, b_out = fold_static(model, embedding[0])
        used = notes.any(2).any(0).nonzero()[:, 0]  # channels with notes
        if used.numel() == 0:  # silence: keep one (zero) channel for a non-empty matmul
            used = used.new_zeros(1)
        x = roll.index_select(1, used).permute(2, 0, 1).contiguous()  # T x B x K'
        directions = [
            DirectionWeights(d.w_ih.index_select(1, used), d.w_hh, d.b_ih, d.b_hh)
            for d in directions
        ]
        h_fwd, h_bwd = run(x, directions)
        hidden, bins = h_fwd.shape[-1], model.config.n_mels
        rows = torch.addmm(b_out, h_fwd.reshape(-1, hidden), w_out[:, :hidden].t())
        rows = rows.addmm_(h_bwd.reshape(-1, hidden), w_out[:, hidden:].t())  # (T B) x R
        mel, rest = rows[:, :bins], rows[:, bins:]

        def frames(x: torch.Tensor) -> torch.Tensor:  # (T B) x N -> B x N x T
            return x.reshape(total, batch, -1).permute(1, 2, 0)

        gate = None
        if model.harmonic is not None and model.harmonic.gate is not None:
            gate, rest = frames(rest[:, :bins]), rest[:, bins:]
        coefficients = None
        if model.modulation is not None:
            n = model.modulation.coefficients.out_channels
            coefficients, rest = frames(rest[:, :n]), rest[:, n:]
        if model.head is not None:
            out = model.head.out
            mel = torch.addmm(mel, rest.relu(), out.weight[..., 0].t()).add_(out.bias)
        mel = frames(mel).contiguous()
        if model.harmonic is not None:
            tones = model.tones_of(raw, embedding=embedding[0]).to(mel.dtype)
            mel = mel + model.harmonic(tones, embedding.to(mel.dtype), gate)
        if coefficients is not None:
            mel = mel + model.modulation.move(raw, coefficients.contiguous())
        if model.velocity_gain is not None:
            mel = mel + model.velocity_gain(raw, embedding.to(mel.dtype))
        return floor_log_mel(mel)  # as Mel2Mel.readout
    embedding = embedding.to(roll.dtype)
    h = model.film_in(model.frontend(model.input(roll)), embedding)  # B x C x T
    h_fwd, h_bwd = run(h.permute(2, 0, 1).contiguous(), lstm_directions(model))
    h = torch.cat([h_fwd, h_bwd], dim=2).permute(1, 2, 0)  # B x 2H x T
    return model.readout(h, embedding, model.tones_of(raw), raw)


@torch.inference_mode()
def symmetric_windows(
    model: Mel2Mel,
    roll: torch.Tensor,
    embedding: torch.Tensor,
    *,
    chunk_frames: int | None,
    context_frames: int,
) -> torch.Tensor:
    """Windows of ``chunk_frames + 2 * context_frames`` frames through :meth:`Mel2Mel.forward`.

    The general (and older, slower) form of the approximation, for any architecture: each
    window runs the whole network as one batch, and its core's output is kept.

    Parameters
    ----------
    roll: Tensor[B x 176 x T]
    embedding: Tensor[B x E] or Tensor[B x E x T]
    chunk_frames, context_frames:
        Core and context on each side; ``None`` (or ``T`` short enough) is one exact window.

    Returns
    -------
    Tensor[B x N_MELS x T]
    """
    total = roll.shape[-1]
    if chunk_frames is None or total <= chunk_frames + 2 * context_frames:
        return model(roll, embedding=embedding)
    width = chunk_frames + 2 * context_frames
    starts = list(range(0, total, chunk_frames))
    # Windows of equal width, shifted inside [0, T) at the edges so that the first and last
    # ones begin/end exactly where the piece does.
    windows = [min(max(s - context_frames, 0), total - width) for s in starts]
    rolls = torch.cat([roll[..., w : w + width] for w in windows])
    if embedding.dim() == 3:
        emb = torch.cat([embedding[..., w : w + width] for w in windows])
    else:
        emb = embedding.repeat(len(windows), 1)
    out = model(rolls, embedding=emb).view(len(windows), roll.shape[0], -1, width)
    parts = [
        out[i, ..., s - w : min(s + chunk_frames, total) - w]
        for i, (s, w) in enumerate(zip(starts, windows, strict=True))
    ]
    return torch.cat(parts, dim=-1)
