"""The timbre space: how a timbre is specified (:mod:`~mel2mel.timbre.spec`), user timbres
(:mod:`~mel2mel.timbre.library`) and how one is learned from a recording
(:mod:`~mel2mel.timbre.learn`), sweeps of a model over its embedding
(:mod:`~mel2mel.timbre.sweep`), the 2-D map (:mod:`~mel2mel.timbre.map`) and the 3-D view of a
many-instrument model (:mod:`~mel2mel.timbre.space3d`)."""
