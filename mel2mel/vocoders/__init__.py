"""Vocoders: log-mel -> 16 kHz audio, behind one interface (:class:`Vocoder`)."""
