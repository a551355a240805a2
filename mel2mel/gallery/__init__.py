"""The paper's "synthesized audio samples" as a static page: ``mel2mel gallery build``.

:mod:`~mel2mel.gallery.configs` (the columns), :mod:`~mel2mel.gallery.render` (the clips),
:mod:`~mel2mel.gallery.page` (images and the page), :mod:`~mel2mel.gallery.build` (the build).
"""
