"""The rule-based report parser (the offline default backend).

A report is cut to its findings and impression, split into sentences, and each sentence is
read once: lexicon mentions (tasks.reports.lexicon), their assertion (tasks.reports.negation) and
attributes (tasks.reports.attributes). Mentions combine per finding (tasks.reports.records).
Sentences and reports repeat a lot across a collection ("No pneumothorax."), so both are cached.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache

from tqdm import tqdm

from cxrsynth.tasks.reports.attributes import describe
from cxrsynth.tasks.findings import ABSENT
from cxrsynth.tasks.reports.lexicon import Mention, find_look_alikes, find_mentions, normalise
from cxrsynth.tasks.reports.negation import SentenceContext
from cxrsynth.tasks.reports.records import FindingState, combine
from cxrsynth.tasks.reports.sections import report_body, split_sentences


@lru_cache(maxsize=65536)
def parse_sentence(sentence: str) -> tuple[tuple[str, FindingState], ...]:
    """(finding, mention state) for every finding mention in one sentence, in reading order."""
    text = normalise(sentence)
    mentions = find_mentions(text)
    if not mentions:
        return ()
    context = SentenceContext(text)
    look_alikes = find_look_alikes(text)
    parsed = []
    for index, mention in enumerate(mentions):
        term = mention.term
        previous_end = max((m.end for m in mentions[:index] if m.end <= mention.start), default=0)
        next_start = min((m.start for m in mentions[index + 1:] if m.start >= mention.end), default=len(text))
        state = term.state if term.fixed else context.assertion(mention.start, mention.end, term.state)
        if not term.fixed and state != ABSENT:
            explained = _explained(context, mention, mentions, look_alikes, next_start)
            state = state if explained is None else explained
        attributes = describe(text, mention.start, mention.end, previous_end, next_start, mention.finding)
        parsed.append((mention.finding, FindingState(
            state=state,
            laterality=attributes.laterality,
            location=attributes.location,
            severity=attributes.severity or term.severity,
            sentence=sentence,
        )))
    return tuple(parsed)


def _explained(context: SentenceContext, mention: Mention, mentions: list[Mention],
               look_alikes: list[tuple[int, int]], next_start: int) -> int | None:
    """The state an alternative explanation gives the mention, or None: the first look-alike after it and before
    the next mention, or, for a descriptive term ("nodular opacity"), the next mention of another finding."""
    others = [start for start, _ in look_alikes if mention.end <= start < next_start]
    if mention.term.descriptive:
        others += [m.start for m in mentions if m.finding != mention.finding and m.start == next_start]
    return context.explanation(mention.end, min(others)) if others else None


def parse_report(text: str | None) -> dict[str, FindingState]:
    """Per mentioned finding: its state and attributes in this report."""
    return combine(pair for sentence in split_sentences(report_body(text)) for pair in parse_sentence(sentence))


def parse_reports(texts: Iterable[str | None], progress: bool = True) -> list[dict[str, FindingState]]:
    """parse_report over many reports; each distinct text is parsed once."""
    texts = list(texts)
    distinct = list(dict.fromkeys(texts))
    parsed = {text: parse_report(text) for text in tqdm(distinct, desc="parse reports (rules)", unit="report",
                                                         disable=not progress)}
    return [parsed[text] for text in texts]
