"""How :class:`mel2mel.Synthesizer` renders a piece of any length in bounded memory.

:mod:`~mel2mel.synthesis.notes` builds the piano roll window by window from the note list;
:mod:`~mel2mel.synthesis.streams` runs the acoustic model on overlapping windows, the texture
post-net on chunks, and feeds the vocoder as the mel arrives. The public API stays in
:mod:`mel2mel.synthesizer`.
"""
