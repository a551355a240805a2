"""Paper-style evaluation: the acoustic model (:mod:`~mel2mel.evaluation.acoustic`), the
vocoders (:mod:`~mel2mel.evaluation.vocoder`) and what their reports share
(:mod:`~mel2mel.evaluation.report`)."""
