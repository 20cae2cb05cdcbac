"""The coco-caption scorers (`pycocoevalcap`), called as Shot2Story scores its summaries.

Shot2Story's evaluation goes through nlg-eval's `NLGEval.compute_metrics`, which hands each coco-caption
scorer the stripped text as it is: no PTB tokenisation and no lower-casing, so BLEU-4, ROUGE-L (β = 1.2) and
CIDEr (coco-caption's, i.e. CIDEr-D) compare space-separated words ("mat." is not "mat"), while METEOR 1.5
normalises with its own `-norm` (lower case, punctuation split off).

METEOR 1.5 is a Java jar shipped inside pycocoevalcap: without a `java` on PATH scoring stops with an error
naming METEOR (never a silent substitute). The jar's JVM starts on the first call (10-40 s: it loads its
paraphrase table) and serves every later call of the process.
"""

from __future__ import annotations

import functools
import shutil
from collections.abc import Sequence
from importlib import metadata
from typing import Any

METHOD = "untokenised text as nlg-eval passes it; BLEU-4, METEOR 1.5, ROUGE-L (beta 1.2), CIDEr-D"


def scorer_name() -> str:
    """What results.json records as the text scorer."""
    return f"pycocoevalcap {metadata.version('pycocoevalcap')} ({METHOD})"


def _java() -> str:
    java = shutil.which("java")
    if java is None:
        raise RuntimeError(
            "METEOR: pycocoevalcap's METEOR 1.5 runs as a Java jar and there is no `java` on PATH; install a "
            "Java runtime (Debian: apt-get install default-jre-headless)"
        )
    return java


@functools.cache
def _meteor_scorer() -> Any:
    """pycocoevalcap's `Meteor`: one JVM, started on first use and kept for the process (it takes 10-40 s to
    load the paraphrase table); it ends with the process."""
    from pycocoevalcap.meteor.meteor import Meteor

    return Meteor()


def _meteor(references: dict[int, list[str]], hypotheses: dict[int, list[str]]) -> float:
    """Corpus METEOR 1.5 (the jar's aggregate over all segments, not a mean of sentence scores), 0-1."""
    java = _java()
    scorer = _meteor_scorer()
    if scorer.meteor_p.poll() is not None:  # that JVM has ended: start another
        _meteor_scorer.cache_clear()
        scorer = _meteor_scorer()
    try:
        return float(scorer.compute_score(references, hypotheses)[0])
    except (ValueError, OSError) as err:  # no score came back (ValueError) or the pipe broke: the jar died
        _meteor_scorer.cache_clear()
        scorer.meteor_p.kill()
        stderr = scorer.meteor_p.stderr.read().decode(errors="replace").strip()[-2000:]
        scorer.lock.release()  # compute_score holds it when it fails; the scorer's __del__ takes it again
        raise RuntimeError(f"METEOR: the METEOR 1.5 jar (run by {java}) gave no score: {stderr}") from err


def coco_scores(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """BLEU-4, METEOR, ROUGE-L and CIDEr of `hypotheses` (N,) against their reference lists (N, >= 1 each),
    on 0-1 (CIDEr on its own 0-10 scale). Texts must be single lines: METEOR's jar reads one per line."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    hyps = {i: [text] for i, text in enumerate(hypotheses)}
    refs = {i: list(texts) for i, texts in enumerate(references)}
    for i, texts in [*hyps.items(), *refs.items()]:
        if not texts or any("\n" in t for t in texts):
            raise ValueError(
                f"caption {i}: needs single-line texts and at least one reference, got {texts!r}"
            )
    meteor = _meteor(refs, hyps)  # first: a missing Java stops before any scoring
    return {
        "bleu": float(Bleu(4).compute_score(refs, hyps, verbose=0)[0][3]),
        "meteor": meteor,
        "rouge_l": float(Rouge().compute_score(refs, hyps)[0]),
        "cider": float(Cider().compute_score(refs, hyps)[0]),
    }
