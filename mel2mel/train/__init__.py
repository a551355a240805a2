"""Training: configs, the shared loop, one trainer per model kind, checkpoints, distributed.

Nothing here is needed for inference: exported models load through :mod:`mel2mel.models.export`.
Import the submodules directly (``from mel2mel.train.acoustic_loop import train_acoustic``);
this package file stays empty so that importing one part does not pull in the others.
"""
