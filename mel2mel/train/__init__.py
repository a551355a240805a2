"""Training of mel2mel models: losses, the loop, checkpoints, multi-process helpers.

Nothing here is needed for inference: exported models load through :mod:`mel2mel.models.io`.
Import the submodules directly (``from mel2mel.train.loop import train_acoustic``); this package
file stays empty so that importing one part does not pull in the others.
"""
