"""ONNX graphs of the shipped models, for the in-page synthesis (docs/WEB.md, "In the page").

Three graphs, built from the safetensors exports at export time (no ONNX copy of the weights
ships with the package):

* ``acoustic.onnx`` (and ``acoustic100.onnx``): :class:`AcousticGraph`, the roll channels
  that play + embedding -> log-mel. The embedding is an input, so any point of the timbre map
  (or of the 10-D space) works; the input layer and the first FiLM are folded into the LSTM for
  it in the graph, once per call.
* ``acoustic_texture.onnx``: :class:`TextureGraph`, log-mel + embedding + noise + strength ->
  log-mel with texture. The noise is an input: the page draws its own
  (``static/inpage/dsp.js``), Python tests feed the same numbers to both sides.
* ``fast_vocoder.onnx``: :class:`VocoderGraph`, the fast vocoder's network and STFT head up to
  the per-frame magnitude, phase offset and phase step. What ONNX does not express (the
  running phase in float64 carried across blocks, the mel-matching refinement with its
  STFTs, the inverse STFT) is written once in JavaScript (``static/inpage/dsp.js``) against
  :mod:`mel2mel.vocoders.refine`, and checked against it in ``tests/inpage/``.

Weights may be stored as float16 (``half=True``, the default of :func:`export_onnx`): every
large float32 initializer becomes a float16 one and a ``Cast`` back to float32, so the graph
computes in float32 as before at half the download. Errors are measured in docs/WEB.md. Large
tensors that are mostly zeros (the harmonic detail's combs) are stored as their nonzero
values and positions, rebuilt in the graph (:func:`sparsify`, exact).

The graphs are traced with torch's TorchScript exporter (``dynamo=False``): it writes the
LSTM as one ONNX ``LSTM`` node and needs only the ``onnx`` package (the dynamo exporter
would add ``onnxscript``).
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mel2mel import constants as C
from mel2mel import pretrained
from mel2mel.audio import mel_filterbank
from mel2mel.errors import UserError
from mel2mel.fileio import atomic_write, atomic_write_text
from mel2mel.models.acoustic import Mel2Mel
from mel2mel.models.export import export_paths, load_acoustic, load_texture, load_vocoder
from mel2mel.models.texture import NOISE_BLOCK, TexturePostnet, texture_ceiling
from mel2mel.vocoders.fast import FastVocoder
from mel2mel.vocoders.refine import BandedMatrix

OPSET = 17
FORMAT_VERSION = 1
HALF_MIN_ELEMENTS = 1024  # smaller initializers (biases, norms) stay float32
SPARSE_MIN_ZEROS = 0.75  # a large initializer with this share of zeros is stored sparse


def _require_onnx() -> Any:
    try:
        import onnx
    except ImportError as err:  # pragma: no cover - the [web] extra installs it
        raise UserError("ONNX export needs the onnx package: pip install 'mel2mel[web]'") from err
    return onnx


class AcousticGraph(nn.Module):
    """:class:`Mel2Mel` for one embedding, on the roll channels that play.

    As :mod:`mel2mel.models.acoustic_fast` does in Python, the input convolution and the first
    FiLM are folded into the LSTM's input weights for the call's embedding, and only the roll
    channels that play are multiplied: the input projection costs ``4H x K`` per frame for
    ``K`` channels (about 40 in a few seconds of music) instead of ``4H x C`` (C = 256), and
    the fold ``4H x C x K`` once per call. Equals :meth:`Mel2Mel.forward` to float rounding,
    followed by the model's detail gains at strength 1 (:meth:`Mel2Mel.sharpen`) when it has
    them, as the synthesizer renders by default. Needs ``frontend_layers == 0`` and one LSTM
    layer (every shipped model).
    """

    def __init__(self, model: Mel2Mel) -> None:
        super().__init__()
        c = model.config
        if c.frontend_layers or c.lstm_layers != 1 or c.note_modulation or c.velocity_gain:
            raise UserError(
                "ONNX export supports acoustic models without frontend layers, note modulation "
                "or velocity gain, and with one LSTM layer"
            )
        self.model = model.eval()

    def forward(
        self, roll: torch.Tensor, channels: torch.Tensor, embedding: torch.Tensor
    ) -> torch.Tensor:
        """Tensor[1 x K x T] rows ``channels`` of the roll (velocity / 127), Tensor[K] int64
        channel numbers (0..175), Tensor[1 x E] -> Tensor[1 x 80 x T] natural-log mel."""
        m, lstm = self.model, self.model.lstm
        w_in = m.input.weight[:, :, 0].index_select(1, m.coded_rows(channels))  # C x K (x 2)
        gamma = 1.0 + m.film_in.gamma(embedding)[0]
        beta = m.film_in.beta(embedding)[0]
        weights = []
        for suffix in ("", "_reverse"):
            w_ih = getattr(lstm, "weight_ih_l0" + suffix)
            bias = getattr(lstm, "bias_ih_l0" + suffix)
            weights += [w_ih @ (gamma[:, None] * w_in), getattr(lstm, "weight_hh_l0" + suffix),
                        w_ih @ (gamma * m.input.bias + beta) + bias,
                        getattr(lstm, "bias_hh_l0" + suffix)]  # fmt: skip
        x = m.code_roll(roll).transpose(1, 2)  # 1 x T x K (x 2)
        h0 = torch.zeros(2, 1, lstm.hidden_size)
        h = torch._VF.lstm(x, (h0, h0), weights, True, 1, 0.0, False, True, True)[0]
        mel = m.readout(h.transpose(1, 2), embedding, m.tones_of(roll, channels, embedding[0]))
        return m.sharpen(mel, embedding)  # the detail gains, as the synthesizer applies them


class TextureGraph(nn.Module):
    """:class:`TexturePostnet` with the strength as an input (``float32[1]``)."""

    def __init__(self, model: TexturePostnet) -> None:
        super().__init__()
        self.model = model.eval()

    def forward(
        self, mel: torch.Tensor, emb: torch.Tensor, noise: torch.Tensor, strength: torch.Tensor
    ) -> torch.Tensor:
        """Tensor[B x 80 x T], Tensor[B x E], Tensor[B x Z x T], Tensor[1] -> Tensor[B x 80 x T],
        floored and held under each frame's ceiling (as ``TexturePostnet.forward``)."""
        return texture_ceiling(mel, mel + strength * self.model.residual(mel, emb, noise))


def dense(matrix: BandedMatrix) -> torch.Tensor:
    """The Tensor[K x N] that a :class:`BandedMatrix` multiplies by (zeros outside its runs)."""
    out = torch.zeros(matrix.in_features, matrix.out_features)
    for i, (r0, r1, c0, c1) in enumerate(matrix.runs):
        if r1 > r0:
            out[r0:r1, c0:c1] = getattr(matrix, f"block{i}")
    return out


class VocoderGraph(nn.Module):
    """The fast vocoder up to its per-frame outputs (see the module docstring).

    ``magnitude`` is ``FastVocoder``'s clamped ``exp`` of the log-magnitude, ``offset`` the
    local phase offset and ``step`` the phase advance ``centre + delta`` of each bin; the
    phase of frame ``t`` is ``(sum of step over frames <= t) + offset[t]``.
    """

    def __init__(self, model: FastVocoder) -> None:
        super().__init__()
        cfg = model.config
        if not cfg.integrate_phase or model.head.prior is None:
            raise UserError("ONNX export needs a fast vocoder with integrate_phase and a prior")
        self.model = model.eval()
        prior = model.head.prior
        self.register_buffer("gram_t", prior.gram.T.contiguous(), persistent=False)
        self.register_buffer("synthesis", dense(prior.synthesis), persistent=False)
        self.iterations = prior.iterations

    def forward(
        self, mel: torch.Tensor, roll: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Tensor[1 x 80 x T] log-mel, Tensor[1 x 176 x T] roll (zeros: none) ->
        ``(magnitude, offset, step)``, each Tensor[1 x T x F], F = n_fft / 2 + 1."""
        head = self.model.head
        x = self.model.features(mel, roll if self.model.uses_roll else None)
        parts = head.proj(x).split(head.bins, dim=-1)
        target = torch.exp(mel).transpose(1, 2)  # [B x T x M]
        v = target
        for _ in range(self.iterations):  # BandInverter.frames_major, densely
            v = v * target / torch.matmul(v, self.gram_t).clamp_min(1e-12)
        log_mag = parts[0] + torch.log(torch.matmul(v, self.synthesis) + 1e-5)
        magnitude = log_mag.clamp(max=7.0).exp()
        return magnitude, parts[1], parts[2] + head.centre


def to_onnx(module: nn.Module, args: tuple[torch.Tensor, ...], inputs: list[str],
            outputs: list[str], axes: dict[str, dict[int, str]]) -> Any:  # fmt: skip
    """Trace ``module`` on ``args`` with the TorchScript exporter (it handles the LSTM as one
    ONNX ``LSTM`` node); returns the ``onnx.ModelProto``."""
    onnx = _require_onnx()
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer and batch-size notes about fixed shapes
        torch.onnx.export(
            module, args, buf, dynamo=False, opset_version=OPSET, input_names=inputs,
            output_names=outputs, dynamic_axes=axes, do_constant_folding=True,
        )  # fmt: skip
    return onnx.load_from_string(buf.getvalue())


def lift_constants(model: Any) -> Any:
    """Turn every float32 ``Constant`` node of at least ``HALF_MIN_ELEMENTS`` values (a tensor
    the trace fixed, such as the harmonic detail's combs) into an initializer of its name."""
    onnx = _require_onnx()
    from onnx import numpy_helper

    graph = model.graph
    for node in list(graph.node):
        value = node.attribute[0].t if node.op_type == "Constant" and node.attribute else None
        if value is None or node.attribute[0].name != "value":
            continue
        if value.data_type == onnx.TensorProto.FLOAT and np.prod(value.dims) >= HALF_MIN_ELEMENTS:
            array = numpy_helper.to_array(value)
            graph.initializer.append(numpy_helper.from_array(array, node.output[0]))
            graph.node.remove(node)
    return model


def halve_weights(model: Any, keep: tuple[str, ...] = (), constants: bool = True) -> Any:
    """Store every float32 initializer of at least ``HALF_MIN_ELEMENTS`` values as float16,
    followed by a ``Cast`` to float32 (the graph still computes in float32); initializers whose
    name contains one of ``keep`` stay float32. With ``constants``, large float32 ``Constant``
    nodes become such initializers first (:func:`lift_constants`)."""
    onnx = _require_onnx()
    from onnx import helper, numpy_helper

    graph = model.graph
    if constants:
        lift_constants(model)
    casts = []
    for init in graph.initializer:
        if init.data_type != onnx.TensorProto.FLOAT:
            continue
        array = numpy_helper.to_array(init)
        if array.size < HALF_MIN_ELEMENTS or any(k in init.name for k in keep):
            continue
        name = init.name
        half = numpy_helper.from_array(array.astype(np.float16), name + "_f16")
        init.CopyFrom(half)
        casts.append(helper.make_node("Cast", [name + "_f16"], [name], to=onnx.TensorProto.FLOAT))
    _prepend(graph, casts)
    return model


def sparsify(model: Any, min_zeros: float = SPARSE_MIN_ZEROS) -> Any:
    """Store every float initializer of at least ``HALF_MIN_ELEMENTS`` values of which at least
    ``min_zeros`` are zero as its nonzero values (same dtype) and their flat positions (int32),
    rebuilt in the graph by ``ScatterND`` into zeros and a ``Reshape``: exact, and a fraction of
    the size (the harmonic combs of a model with ``harmonic_heights`` are 7 % nonzero)."""
    onnx = _require_onnx()
    from onnx import helper, numpy_helper

    graph = model.graph
    nodes = []
    for init in list(graph.initializer):
        array = numpy_helper.to_array(init)
        if array.dtype.kind != "f" or array.size < HALF_MIN_ELEMENTS:
            continue
        if np.mean(array == 0) < min_zeros:
            continue
        flat, name = array.reshape(-1), init.name
        where = np.flatnonzero(flat)
        graph.initializer.remove(init)
        graph.initializer.extend([
            numpy_helper.from_array(flat[where], f"{name}_values"),
            numpy_helper.from_array(where.astype(np.int32)[:, None], f"{name}_at"),
            numpy_helper.from_array(np.array([flat.size], np.int64), f"{name}_size"),
            numpy_helper.from_array(np.array(array.shape, np.int64), f"{name}_shape"),
        ])  # fmt: skip
        zero = numpy_helper.from_array(np.zeros(1, array.dtype))
        nodes += [
            helper.make_node("ConstantOfShape", [f"{name}_size"], [f"{name}_zeros"], value=zero),
            helper.make_node("Cast", [f"{name}_at"], [f"{name}_at64"], to=onnx.TensorProto.INT64),
            helper.make_node(
                "ScatterND", [f"{name}_zeros", f"{name}_at64", f"{name}_values"], [f"{name}_flat"]
            ),
            helper.make_node("Reshape", [f"{name}_flat", f"{name}_shape"], [name]),
        ]
    _prepend(graph, nodes)
    return model


def _prepend(graph: Any, nodes: list[Any]) -> None:
    """Put ``nodes`` before the graph's own (ONNX wants them in topological order)."""
    rest = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes + rest)


def compact(proto: Any, half: bool) -> bytes:
    """The bytes of a traced graph with its float16 weights (``half``) and sparse tensors."""
    return sparsify(halve_weights(proto) if half else lift_constants(proto)).SerializeToString()


def acoustic_onnx(model: Mel2Mel, half: bool = True) -> bytes:
    """The ONNX bytes of :class:`AcousticGraph` (inputs ``roll`` [1 x K x T], ``channels``
    [K] int64, ``embedding`` [1 x E]; output ``mel`` [1 x 80 x T]; K and T free)."""
    channels = torch.tensor([40, 130])
    roll = torch.zeros(1, 2, 64)
    roll[:, :, 10:30] = 0.7
    emb = torch.zeros(1, model.embedding_dim)
    axes = {"roll": {1: "K", 2: "T"}, "channels": {0: "K"}, "mel": {2: "T"}}
    names = ["roll", "channels", "embedding"]
    proto = to_onnx(AcousticGraph(model), (roll, channels, emb), names, ["mel"], axes)
    return compact(proto, half)


def texture_onnx(model: TexturePostnet, half: bool = True) -> bytes:
    """The ONNX bytes of :class:`TextureGraph` (inputs ``mel``, ``embedding``, ``noise``,
    ``strength``; output ``mel_out``)."""
    c = model.config
    if c.note_detail:
        raise UserError(
            "the in-page path cannot run a texture post-net that reads the notes "
            "(note_detail) yet; export one without it"
        )
    args = (torch.full((1, C.N_MELS, 64), -6.0), torch.zeros(1, c.embedding_dim),
            torch.zeros(1, c.noise_channels, 64), torch.ones(1))  # fmt: skip
    axes = {"mel": {0: "B", 2: "T"}, "embedding": {0: "B"}, "noise": {0: "B", 2: "T"},
            "mel_out": {0: "B", 2: "T"}}  # fmt: skip
    names = ["mel", "embedding", "noise", "strength"]
    proto = to_onnx(TextureGraph(model), args, names, ["mel_out"], axes)
    return compact(proto, half)


def vocoder_onnx(model: FastVocoder, half: bool = True) -> bytes:
    """The ONNX bytes of :class:`VocoderGraph` (inputs ``mel``, ``roll``; outputs
    ``magnitude``, ``offset``, ``step``; T free)."""
    if model.held is not None:
        raise UserError(
            "the in-page path cannot run a vocoder that keeps held partials down "
            "(held_partials) yet; export one without it"
        )
    args = (torch.full((1, C.N_MELS, 64), -6.0), torch.zeros(1, C.ROLL_CHANNELS, 64))
    axes = {"mel": {2: "T"}, "roll": {2: "T"}, "magnitude": {1: "T"}, "offset": {1: "T"},
            "step": {1: "T"}}  # fmt: skip
    outs = ["magnitude", "offset", "step"]
    proto = to_onnx(VocoderGraph(model), args, ["mel", "roll"], outs, axes)
    return sparsify(
        halve_vocoder(proto, model) if half else lift_constants(proto)
    ).SerializeToString()


def halve_vocoder(proto: Any, model: FastVocoder, constants: bool = True) -> Any:
    """:func:`halve_weights` for the vocoder's graph. The head's projection stays float32: its
    phase steps are summed over the whole piece, so their rounding drifts the phase (waveform
    SNR 28 dB with it in float16, 37 without)."""
    width = 3 * model.head.bins
    keep = tuple(i.name for i in proto.graph.initializer if width in i.dims)
    return halve_weights(proto, keep, constants)


def signal_tables() -> dict[str, Any]:
    """What the page's DSP needs besides the graphs: the mel filterbank ``[80 x 513]`` (its
    non-zero run per band) and the constants."""
    fbank = mel_filterbank()
    bands = []
    for row in fbank:
        nz = np.flatnonzero(row)
        lo, hi = (int(nz[0]), int(nz[-1]) + 1) if len(nz) else (0, 0)
        bands.append({"lo": lo, "w": [float(v) for v in row[lo:hi]]})
    return {
        "sample_rate": C.SAMPLE_RATE, "hop": C.HOP_LENGTH, "n_fft": C.N_FFT, "n_mels": C.N_MELS,
        "log_floor": C.LOG_FLOOR, "midi_min": C.MIDI_MIN, "n_keys": C.N_KEYS,
        "frame_rate": C.FRAME_RATE, "noise_block": NOISE_BLOCK, "mel_bands": bands,
    }  # fmt: skip


def _space_embeddings() -> list[list[float]]:
    """The embedding of each instrument of ``space100.json``, in its order (the page's 3-D
    view numbers them so); empty when the file is missing."""
    path = pretrained.path(pretrained.SPACE100)
    if not path.is_file():
        return []
    doc = json.loads(path.read_text(encoding="utf-8"))
    return [[float(v) for v in inst["embedding"]] for inst in doc.get("instruments", [])]


def _instruments(model: Mel2Mel) -> list[dict[str, Any]]:
    table = model.embedding.weight.detach().cpu().numpy()
    return [
        {"name": i.name, "program": i.program, "embedding": [float(v) for v in row]}
        for i, row in zip(model.instruments, table, strict=True)
    ]


def export_onnx(
    out_dir: str | Path, *, model: str | Path | None = None, half: bool = True,
    space100: bool = True, force: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """Write the in-page models of the shipped (or given) exports to ``out_dir``: see
    :func:`write_onnx`.

    Parameters
    ----------
    out_dir:
        Folder to write (created).
    model:
        The acoustic export (default: the shipped ``acoustic``), with its texture post-net.
    half:
        Store weights as float16 (computed in float32), all but the vocoder head's.
    space100:
        Add the shipped 100-instrument model, when installed.
    force:
        Replace existing files; without it an existing ``manifest.json`` is an error.
    """
    out = Path(out_dir)
    if (out / "manifest.json").exists() and not force:
        raise UserError(f"{out / 'manifest.json'} exists (use -f/--force to overwrite)")
    stem = Path(model) if model is not None else pretrained.path(pretrained.ACOUSTIC)
    acoustic = load_acoustic(stem)
    acoustic_weights, desc = export_paths(stem)
    texture = load_texture(desc.with_suffix(""), acoustic_weights)
    vocoder = load_vocoder(pretrained.path(pretrained.FAST_VOCODER))
    if not isinstance(vocoder, FastVocoder):  # pragma: no cover - the shipped one is
        raise UserError("the in-page path needs the fast vocoder")
    m100 = None
    if space100 and pretrained.path(pretrained.ACOUSTIC100 + ".json").is_file():
        m100 = load_acoustic(pretrained.path(pretrained.ACOUSTIC100))
    return write_onnx(out, acoustic, texture, vocoder, m100, _space_embeddings(), half=half)


def _beats(model: Mel2Mel) -> dict[str, Any] | None:
    """The model's note beats as the page draws them (``static/inpage/beats.js``), or None."""
    return None if model.drawn_beats is None else model.drawn_beats.to_dict()


def _contrast(model: Mel2Mel) -> dict[str, Any] | None:
    """The model's note contrast as the page applies it (``static/inpage/contrast.js``)."""
    return None if model.note_contrast is None else model.note_contrast.to_page_dict()


def write_onnx(
    out_dir: str | Path, acoustic: Mel2Mel, texture: TexturePostnet | None, vocoder: FastVocoder,
    space_model: Mel2Mel | None = None, space_embeddings: list[list[float]] | None = None,
    *, half: bool = True,
) -> dict[str, Any]:  # fmt: skip
    """Write ``acoustic.onnx``, ``acoustic_texture.onnx`` (with a post-net),
    ``fast_vocoder.onnx``, ``acoustic100.onnx`` (with ``space_model``) and ``manifest.json``
    (files and sizes, instruments, texture strength, refinement settings, the note beats and
    note contrast, the 100 embeddings, signal tables) to ``out_dir``, the manifest last;
    returns the manifest."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Any] = {}

    def put(name: str, data: bytes) -> None:
        atomic_write(out / name, lambda tmp: Path(tmp).write_bytes(data))
        files[name] = len(data)

    put("acoustic.onnx", acoustic_onnx(acoustic, half))
    if texture is not None:
        put("acoustic_texture.onnx", texture_onnx(texture, half))
    put("fast_vocoder.onnx", vocoder_onnx(vocoder, half))
    space = None
    if space_model is not None:
        put("acoustic100.onnx", acoustic_onnx(space_model, half))
        space = {"file": "acoustic100.onnx", "embedding_dim": space_model.embedding_dim,
                 "embeddings": space_embeddings or [], "beats": _beats(space_model),
                 "contrast": _contrast(space_model)}  # fmt: skip
    cfg = vocoder.config
    manifest = {
        "format": FORMAT_VERSION,
        "kind": "mel2mel-onnx",
        "half": half,
        "files": files,
        "acoustic": {
            "file": "acoustic.onnx",
            "embedding_dim": acoustic.embedding_dim,
            "instruments": _instruments(acoustic),
        },
        "texture": None
        if texture is None
        else {
            "file": "acoustic_texture.onnx",
            "noise_channels": texture.config.noise_channels,
            "context_frames": texture.context_frames,
            "default_strength": texture.default_strength,
        },
        "vocoder": {
            "file": "fast_vocoder.onnx",
            "refine_iterations": cfg.refine_iterations,
            "refine_step": cfg.refine_step,
            "network_context": cfg.kernel_size // 2 * (cfg.layers + 1),
            "partials": None
            if vocoder.partials is None
            else {"width": vocoder.partials.width, "hold": vocoder.partials.hold},
        },
        "beats": _beats(acoustic),
        "contrast": _contrast(acoustic),
        "space100": space,
        "signal": signal_tables(),
    }
    atomic_write_text(out / "manifest.json", json.dumps(manifest, separators=(",", ":")))
    return manifest
