"""The ONNX graphs of the in-page path against PyTorch, on the shipped weights and real MIDI.

``mel2mel export onnx`` writes float16 weights (computed in float32); the tolerances below are
measured on ``examples/example.mid`` (docs/WEB.md, "In the page"):

* acoustic model (the roll channels that play, folded weights): 0.0016 dB mean, 0.011 dB max
  log-mel error (float16 weights);
* texture post-net, same noise: 0.0001 dB mean, 0.005 dB max;
* vocoder network + the Python DSP of the page (running phase, mel-matching refinement, inverse
  STFT) against ``FastVocoder.vocode`` on 8 s: waveform SNR 44 dB with float16 weights (the
  head's projection kept float32), 85 dB with float32 weights; the log-mel of the audio
  within 0.03 dB.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mel2mel import constants as C
from mel2mel.errors import UserError
from mel2mel.midi import midi_to_roll
from mel2mel.models.export import export_paths, load_acoustic, load_texture, load_vocoder
from mel2mel.models.onnx_export import export_onnx, vocoder_onnx
from mel2mel.models.sharpen import DetailGains
from mel2mel.models.texture import texture_noise
from mel2mel.pretrained import path as pretrained_path

ort = pytest.importorskip("onnxruntime", reason="needs the [web] extra (onnxruntime)")
pytest.importorskip("onnx", reason="needs the [web] extra (onnx)")
pytestmark = pytest.mark.usefixtures("single_thread")

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "example.mid"
FRAMES = 1000  # 8 s of the example for the vocoder


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("onnx")
    export_onnx(out, space100=False)
    return out


def session(data: Path | bytes) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    src = str(data) if isinstance(data, Path) else data
    return ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def roll() -> np.ndarray:
    return midi_to_roll(EXAMPLE)[None]


def db(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a - b) * C.DB_PER_NEPER


def snr(ref: np.ndarray, y: np.ndarray) -> float:
    return float(10 * np.log10((ref**2).sum() / ((ref - y) ** 2).sum()))


def test_manifest_lists_files_and_refuses_overwrite(exported: Path) -> None:
    manifest = json.loads((exported / "manifest.json").read_text())
    assert manifest["kind"] == "mel2mel-onnx" and manifest["half"] is True
    for name, size in manifest["files"].items():
        assert (exported / name).stat().st_size == size
    assert [i["name"] for i in manifest["acoustic"]["instruments"]][:2] == [
        "Grand Piano", "Electric Piano",
    ]  # fmt: skip
    assert len(manifest["signal"]["mel_bands"]) == C.N_MELS
    assert sum(manifest["files"].values()) < 6_000_000  # float16: about half of float32
    with pytest.raises(UserError, match="exists"):
        export_onnx(exported, space100=False)


@pytest.mark.parametrize("point", ["Trumpet", (0.37, -1.21)])
def test_acoustic_matches_torch(exported: Path, roll: np.ndarray, point) -> None:
    model = load_acoustic(pretrained_path("acoustic"))
    if isinstance(point, str):
        emb = model.embedding.weight[model.instrument_index(point)][None].detach()
    else:
        emb = torch.tensor([point], dtype=torch.float32)
    channels = np.flatnonzero(roll[0].max(1) > 0)
    feeds = {"roll": roll[:, channels], "channels": channels, "embedding": emb.numpy()}
    out = session(exported / "acoustic.onnx").run(None, feeds)
    with torch.no_grad():
        ref = model.sharpen(model(torch.from_numpy(roll), embedding=emb), emb).numpy()
    err = db(out[0], ref)
    assert err.mean() < 0.005 and err.max() < 0.05, (err.mean(), err.max())


@pytest.mark.parametrize(
    ("harmonic", "head", "gate", "heights", "gains"),
    [
        (False, 0, False, False, False),
        (True, 0, False, False, False),
        (True, 12, True, True, True),
    ],
)
def test_acoustic_graph_codes_the_roll_as_the_model_does(
    roll: np.ndarray, harmonic, head, gate, heights, gains
) -> None:
    from mel2mel.models import AcousticConfig, Mel2Mel
    from mel2mel.models.onnx_export import acoustic_onnx

    torch.manual_seed(0)
    config = AcousticConfig.preset(
        "debug",
        velocity_coding="linear+log",
        harmonic_detail=harmonic,
        head_channels=head,
        detail_gate=gate,
        harmonic_heights=heights,
    )
    model = Mel2Mel(config).eval()
    with torch.no_grad():
        model.input.weight.normal_(0.0, 0.5)  # the log rows matter
        for p in model.head.parameters() if head else ():  # and the readout
            p.normal_(0.0, 0.5)
        if harmonic:  # and the detail, from the channels the page passes
            model.harmonic.gain.weight.normal_(0.0, 0.5)
            model.harmonic.gain.bias.fill_(0.1)
        for p in model.harmonic.gate.parameters() if gate else ():  # moved frame by frame
            p.normal_(0.0, 0.1)
        for p in model.harmonic.heights.parameters() if heights else ():  # own partials
            p.normal_(0.0, 0.1)
    if gains:  # the detail gains, blended between two instruments' per-bin gains
        table = model.embedding.weight.detach()
        rows = torch.linspace(1.0, 2.5, C.N_MELS)
        model.detail_gains = DetailGains(
            ("a", "b"), table[:2].tolist(), (rows.tolist(), rows.flip(0).tolist())
        )
    channels = np.flatnonzero(roll[0].max(1) > 0)
    emb = (0.3 * model.embedding.weight[0] + 0.7 * model.embedding.weight[1])[None].detach()
    feeds = {"roll": roll[:, channels], "channels": channels, "embedding": emb.numpy()}
    out = session(acoustic_onnx(model, half=False)).run(None, feeds)
    with torch.no_grad():
        plain = model(torch.from_numpy(roll), embedding=emb)
        ref = model.sharpen(plain, emb).numpy()
    assert db(out[0], ref).max() < 0.01
    assert (db(ref, plain.numpy()).max() > 1.0) == gains


def test_texture_matches_torch(exported: Path, roll: np.ndarray) -> None:
    model = load_acoustic(pretrained_path("acoustic"))
    weights, desc = export_paths(pretrained_path("acoustic"))
    post = load_texture(desc.with_suffix(""), weights)
    emb = model.embedding.weight[3:4].detach()
    noise = texture_noise(7, 0, roll.shape[2], post.config.noise_channels)[None]
    with torch.no_grad():
        mel = model(torch.from_numpy(roll), embedding=emb)
        ref = post(mel, emb, noise, post.default_strength).numpy()
    feeds = {"mel": mel.numpy(), "embedding": emb.numpy(), "noise": noise.numpy(),
             "strength": np.array([post.default_strength], np.float32)}  # fmt: skip
    err = db(session(exported / "acoustic_texture.onnx").run(None, feeds)[0], ref)
    assert err.mean() < 0.001 and err.max() < 0.05, (err.mean(), err.max())


def test_texture_graph_blends_instrument_strengths() -> None:
    from mel2mel.models.onnx_export import texture_onnx
    from mel2mel.models.texture import InstrumentStrengths, TextureConfig, TexturePostnet

    torch.manual_seed(0)
    post = TexturePostnet(TextureConfig.debug()).eval()
    with torch.no_grad():
        post.output.weight.normal_(0, 0.3)
    post.instrument_strengths = InstrumentStrengths(
        ("a", "b", "c"), ((0.0, 0.0), (1.0, 0.5), (-1.0, 2.0)), (0.2, 1.5, 0.0)
    )
    sess = session(texture_onnx(post, half=False))
    for point in ((0.0, 0.0), (1.0, 0.5), (-1.0, 2.0), (0.3, 0.9)):  # three anchors, a blend
        emb = torch.tensor([point])
        mel = torch.rand(1, C.N_MELS, 50) * 5 - 6
        noise = torch.randn(1, post.config.noise_channels, 50)
        with torch.no_grad():
            ref = post(mel, emb, noise, 0.7).numpy()
        feeds = {"mel": mel.numpy(), "embedding": emb.numpy(), "noise": noise.numpy(),
                 "strength": np.array([0.7], np.float32)}  # fmt: skip
        assert db(sess.run(None, feeds)[0], ref).max() < 1e-3


def vocode_onnx(sess: ort.InferenceSession, voc, mel: torch.Tensor, roll: torch.Tensor):
    """The page's path in Python: the graph, then the notes' partials, the running phase
    (float64), the refinement and the inverse STFT of mel2mel.vocoders."""
    mag, offset, step = sess.run(None, {"mel": mel.numpy(), "roll": roll.numpy()})
    if voc.partials is not None:  # as dsp.js partialPhase
        with torch.no_grad():
            advance, near = (x.numpy() for x in voc.partials(roll))
        step, offset = np.where(near, advance, step), np.where(near, 0.0, offset)
    phase = np.remainder(np.cumsum(step.astype(np.float64), axis=1), 2 * np.pi) + offset
    with torch.no_grad():
        spec = voc.head.polar(torch.from_numpy(mag), torch.from_numpy(phase.astype(np.float32)))
        spec = voc.refine(spec, mel, voc.config.refine_iterations, torch.from_numpy(mag))
        return voc.head.istft(spec)[0].numpy()


def test_texture_graph_refuses_a_post_net_that_reads_the_notes() -> None:
    from mel2mel.models.onnx_export import texture_onnx
    from mel2mel.models.texture import TextureConfig, TexturePostnet

    post = TexturePostnet(TextureConfig(**{**TextureConfig.debug().to_dict(), "note_detail": True}))
    with pytest.raises(UserError, match="note_detail"):
        texture_onnx(post, half=False)


def test_vocoder_graph_refuses_the_held_ceiling() -> None:
    from mel2mel.vocoders.fast import FastVocoder, FastVocoderConfig

    voc = FastVocoder(FastVocoderConfig.debug()).with_held_partials(True)
    with pytest.raises(UserError, match="held_partials"):
        vocoder_onnx(voc, half=False)


# float32: 86.6 dB without the notes' partials, 78.5 dB with them (measured): Python sums the
# phase in float32 within 64-frame blocks, the page (and vocode_onnx) in float64.
@pytest.mark.parametrize("half, min_snr", [(True, 30.0), (False, 75.0)])
def test_vocoder_matches_torch(exported: Path, roll: np.ndarray, half: bool, min_snr: float):
    from mel2mel.audio import log_mel

    voc = load_vocoder(pretrained_path("fast_vocoder"))
    model = load_acoustic(pretrained_path("acoustic"))
    r = torch.from_numpy(roll[:, :, :FRAMES])
    with torch.no_grad():
        mel = model(r, embedding=model.embedding.weight[8:9].detach())
    ref = voc.vocode(mel[0], r[0]).numpy()
    sess = session(exported / "fast_vocoder.onnx" if half else vocoder_onnx(voc, half=False))
    y = vocode_onnx(sess, voc, mel, r)
    assert y.shape == ref.shape
    value, err = snr(ref, y), db(log_mel(y), log_mel(ref)).mean()
    print(f"vocoder ({'float16' if half else 'float32'}): SNR {value:.1f} dB, log-mel {err:.4f} dB")
    assert value > min_snr
    assert err < 0.05


def test_bad_inputs_are_refused(exported: Path, tmp_path: Path) -> None:
    sess = session(exported / "acoustic.onnx")
    with pytest.raises(Exception, match="embedding"):  # onnxruntime names the input
        sess.run(None, {"roll": np.zeros((1, 2, 10), np.float32), "channels": np.array([3, 9]),
                        "embedding": np.zeros((1, 3), np.float32)})  # fmt: skip
    with pytest.raises(UserError):
        export_onnx(tmp_path / "x", model=tmp_path / "missing")


def test_cli_export_onnx(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mel2mel.cli import main

    out = tmp_path / "onnx"
    assert main(["export", "onnx", "-o", str(out)]) == 0
    assert (out / "manifest.json").is_file() and (out / "fast_vocoder.onnx").is_file()
    assert "fast_vocoder.onnx" in capsys.readouterr().out
    assert main(["export", "onnx", "-o", str(out)]) != 0  # no silent overwrite
    assert "exists" in capsys.readouterr().err


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_mostly_zero_tensors_are_stored_sparse_and_exact(dtype) -> None:
    from onnx import TensorProto, helper, numpy_helper

    from mel2mel.models.onnx_export import sparsify

    rng = np.random.default_rng(0)
    table = np.where(rng.random((64, 48)) < 0.1, rng.normal(size=(64, 48)), 0).astype(dtype)
    dense = rng.normal(size=(64, 48)).astype(dtype)  # stays as it is
    graph = helper.make_graph(
        [helper.make_node("Add", ["table", "dense"], ["sum"]),
         helper.make_node("Cast", ["sum"], ["sum32"], to=TensorProto.FLOAT),
         helper.make_node("MatMul", ["x", "sum32"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 48])],
        [numpy_helper.from_array(table, "table"), numpy_helper.from_array(dense, "dense")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    before = model.SerializeToString()
    after = sparsify(model).SerializeToString()
    names = {i.name for i in model.graph.initializer}
    assert "dense" in names and "table" not in names and "table_values" in names
    assert len(before) - len(after) > 0.6 * table.nbytes  # 10 % nonzero: 20-30 % of the bytes
    x = rng.normal(size=(1, 64)).astype(np.float32)
    want = session(before).run(None, {"x": x})[0]
    assert np.array_equal(session(after).run(None, {"x": x})[0], want)
