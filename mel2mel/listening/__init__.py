"""The blind listening test of a gallery (``docs/LISTENING.md``).

A gallery folder (``mel2mel gallery build``) holds the clips of every configuration; this
package turns it into a mean-opinion-score test as in the paper:

* :mod:`~mel2mel.listening.site` reads the folder's ``gallery.json`` (configurations, clips);
* :mod:`~mel2mel.listening.design` draws each listener's session: a short training phase,
  then a balanced, shuffled subset of clips with the reference and the anchor as hidden
  attention checks;
* :mod:`~mel2mel.listening.store` keeps listeners, their sessions and their ratings in an
  SQLite database (WAL, every rating committed on its own);
* :mod:`~mel2mel.listening.stats` computes MOS with 95 % confidence intervals per
  configuration and per instrument, flags inattentive listeners, and sets the paper's
  scores beside ours; :mod:`~mel2mel.listening.report` prints and exports them (CSV).

The web page and its API are :mod:`mel2mel.web.listening`; the commands ``mel2mel listen``.
Nothing here needs more than the standard library.
"""

from __future__ import annotations
