"""Write ``examples/example.mid``, the four-voice chorale of :mod:`mel2mel.examples`.

Usage::

    python examples/make_example.py
    mel2mel render examples/example.mid -o chorale.wav --track 1=trumpet
"""

from __future__ import annotations

from pathlib import Path

from mel2mel.examples import write_example

if __name__ == "__main__":
    path = write_example(Path(__file__).resolve().parent / "example.mid")
    print(f"wrote {path}")
