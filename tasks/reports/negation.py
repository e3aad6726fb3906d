"""NegEx-style assertion: is a mention stated present, absent or uncertain in its sentence?

Triggers are phrases that negate ("no", "without", "free of", "has resolved"), hedge
("possible", "may represent", "cannot exclude") or state a probable diagnosis ("likely",
"consistent with"), which counts as present, like pyConText's probable existence. A trigger
reaches forward (pre), backward (post) or both: forward over the words up to a scope terminator
("but", "however", "which", ";"), backward over a few words only. Pseudo-triggers look like
negations but are not ("no change in the effusion" says the effusion is there and stable; "not
only"; "no findings to suggest" leaves the negation to "no"); they are matched first and hide the
shorter triggers inside them, as longer triggers hide shorter ones ("cannot be excluded" is a
hedge, not a negation).

Where several triggers reach a mention, the nearest decides, together with the triggers adjacent
to it (a chain such as "may be compatible with"), negation before hedging before probable:
"possibly representing atelectasis" is uncertain,
"not likely" absent, but in "no pneumothorax, likely small effusion" the effusion is present.
A bare differential ("atelectasis versus scarring", "infiltrate or atelectasis") is not a hedge,
as in NegEx: each named finding counts as present unless a hedge reaches it.

Hypothetical work-up ("consider CT to exclude a nodule", "evaluation for pneumothorax is limited")
hedges what it names. A hedge in a relative clause reaches back to the clause's head ("nodular
opacity, which could represent a nipple shadow or a nodule") but not past it. In a list that
repeats its negator ("no A, no B, aortic calcifications and dense C") each negator reaches only to
the next comma. ``SentenceContext.explanation`` reads an alternative explanation: a mention said to
be something else ("nodular density ... represents a nipple shadow") is absent, or uncertain when
the explanation is hedged.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass

from cxrsynth.tasks.findings import ABSENT, PRESENT, UNCERTAIN

PRE, POST, BOTH, RELATIVE = "pre", "post", "both", "relative"
BACKWARD_WINDOW_WORDS = 12  # "consolidation, atelectasis and blunting in the left lower lobe have cleared"
# A relative clause reaches back to its head only: "[nodular opacity in the left mid lung], which could represent",
# not past it to an earlier noun ("consolidation with [basilar opacities], which may represent").
RELATIVE_HEAD_WORDS = 8
_PAST_THE_HEAD = re.compile(r"(?<!\w)(?:with|and|or|versus|vs)(?!\w)|[,;:](?!\s*$)")

_CHANGE_MODIFIERS = (
    r"(?:(?:significant|interval|appreciable|substantial|definite|major|other|new|gross|radiographic) ){0,3}"
)
PSEUDO = (
    rf"no {_CHANGE_MODIFIERS}(?:change|increase|decrease|improvement|worsening|progression|enlargement)",
    rf"without {_CHANGE_MODIFIERS}(?:change|improvement|worsening|progression)",
    r"not (?:significantly |substantially |appreciably )?(?:changed|increased|decreased|improved|worsened)",
    r"not only",
    r"no longer (?:requires?|needed)",
    r"gram negative",
    r"to (?:suggest|indicate|represent)",
    r"not (?:well |clearly |fully |optimally )?(?:evaluated|assessed|imaged|included)",
)

# (pattern, state it asserts, direction), longest and most specific first: earlier matches hide later ones.
TRIGGERS: tuple[tuple[str, int, str], ...] = (
    (r"can ?not (?:be )?(?:entirely |completely |totally |definitely )?(?:excluded?|ruled out|rule out)",
     UNCERTAIN, BOTH),
    (r"can't (?:be )?(?:excluded?|ruled out|rule out)", UNCERTAIN, BOTH),
    (r"(?:is |are )?not (?:be )?(?:entirely |completely |totally |definitely )?(?:excluded|ruled out)",
     UNCERTAIN, BOTH),
    (r"difficult to (?:completely |entirely )?(?:exclude|rule out)", UNCERTAIN, PRE),
    # a hedge in a relative clause is about its head ("opacity, which could represent a nipple shadow or a nodule"),
    # unless it hedges a cause ("effusion, which may be related to heart failure")
    (r"(?:which|that) (?:may|might|could) (?:also |well |possibly |potentially |instead |in part )?"
     r"(?:represent|reflect|be|indicate|correspond)\w*(?! (?:related|due|secondary|caused|associated|from|a result))",
     UNCERTAIN, RELATIVE),
    (r"(?:may|might|could) (?:also |well |possibly |potentially |instead |in part )?"
     r"(?:represent|reflect|be|indicate|suggest|relate|correspond|account)\w*", UNCERTAIN, BOTH),
    (r"(?:is|are|was|were|felt to be|considered) unlikely|unlikely", ABSENT, BOTH),
    (r"(?:is|are|was|were) (?:possible|suspected|questioned|questionable|not certain|uncertain|equivocal|"
     r"also possible|not clear|considered)|(?:would be|is|are) a consideration", UNCERTAIN, POST),
    # hypothetical and recommended work-up names a finding without stating it ("consider CT to exclude a nodule")
    (r"to (?:further )?(?:exclude|identify|detect|assess for|evaluate for|look for|search for|screen for)|"
     r"(?:evaluation|assessment) for|suspicion (?:for|of)|maybe|if(?: there (?:is|are|was|were))?|"
     r"consider(?! (?:\w+ ){0,2}?(?:ct|imaging|radiograph\w*|views?|films?|stud(?:y|ies)|exam\w*|follow\w*|"
     r"comparison|correlation|evaluation))|"
     r"(?:to )?rule out|r o|evaluate for|assess for|question of|questionable|question(?:ed)?|equivocal|"
     r"possib(?:le|ly)|suspicious for|suspect(?:ed)?|concern(?:ing)? for|worrisome for|differential|"
     r"cannot exclude|uncertain|indeterminate|presumed|presumably|perhaps|not certain|doubtful|"
     r"can be considered|consideration|suggestion of|correlate (?:clinically )?for|clinical correlation for|"
     r"may|might|could", UNCERTAIN, PRE),
    (r"likely|most likely|probabl[ey]|consistent with|compatible with|suggestive of|suggest(?:s|ing)?|"
     r"represent(?:s|ing)?|in keeping with|characteristic of|diagnostic of|reflect(?:s|ing)?|"
     r"favou?r(?:ed|s)?", PRESENT, PRE),
    (r"no longer (?:seen|present|visuali[sz]ed|visible|identified|evident|appreciated|demonstrated)|"
     r"(?:has|have|had) (?:since |now |completely |nearly |almost |largely )?(?:resolved|cleared|disappeared)|"
     r"(?:is|are|was|were) (?:now )?(?:resolved|absent|gone|cleared)|"
     r"not (?:seen|identified|visuali[sz]ed|appreciated|demonstrated|present|evident|detected|noted|visible|"
     r"apparent|clearly seen|definitely seen|well seen|well visuali[sz]ed)|ruled out|excluded", ABSENT, POST),
    (r"no|not|without|free of|negative for|absence of|absent|resolution of|clear of|nor|no longer|never|"
     r"neither|removal of|rather than|instead of|mimick?(?:s|ed|ing)?|simulat(?:es?|ed|ing)", ABSENT, PRE),
)
TERMINATOR_WORDS = (
    r"but|however|although|though|except|aside from|apart from|other than|whereas|while|yet|nevertheless|"
    r"which|that|who|where|otherwise|there (?:is|are|has|have)|and (?:the|there|a|an)"
)


# An alternative explanation: a finding-like mention said to be something else, by an identity phrase a few words
# before the other thing ("nodular density ... is consistent with a healing rib fracture"); hedged, it is uncertain.
# A cause ("pneumothorax due to rib fractures") is not an identity, and a denial ("not a nipple shadow") ends it.
_IDENTITY = r"represent\w*|reflect\w*|(?:consistent|compatible) with|in keeping with|correspond\w*|suggest\w*|" \
            r"(?:most )?likely|probabl[ey]|presumabl[ey]|favou?r\w*|is|are|(?:may|might|could|would)(?: \w+)? be"
_EXPLANATION_HEDGE = r"likely|probabl[ey]|presumabl[ey]|possibl[ey]|may|might|could|maybe|suggest\w*|favou?r\w*"
_EXPLANATION_STOP = r"but|however|although|though|whereas|while|except|otherwise|not|no|without|rather than|" \
                    r"there (?:is|are)|[;:]"
# Only these words may stand between the identity phrase and the other thing ("is most likely a skin fold"), so that
# "nodule is unchanged with adjacent scarring" does not say the nodule is scarring.
_IDENTITY_GAP = re.compile(r"\s*(?:(?:a|an|the|this|these|to be|just|only|simply|most|likely|probably|possibly|"
                           r"either|bilateral|left|right)\s+)*")


@dataclass(frozen=True)
class Trigger:
    start: int
    end: int
    state: int
    direction: str


def _words(pattern: str) -> re.Pattern:
    return re.compile(rf"(?<!\w)(?:{pattern})(?!\w)")


_PSEUDO = _words("|".join(PSEUDO))
_TRIGGERS = [(_words(pattern), state, direction) for pattern, state, direction in TRIGGERS]
_QUESTION_MARK = re.compile(r"\?")
_TERMINATOR = re.compile(rf"(?<!\w)(?:{TERMINATOR_WORDS})(?!\w)|[;:]")
_WORD = re.compile(r"\S+")
_IDENTITY_WORDS = _words(_IDENTITY)
_HEDGE_WORDS = _words(_EXPLANATION_HEDGE)
_STOP_WORDS = re.compile(rf"(?<!\w)(?:{_EXPLANATION_STOP})(?!\w)")
# "no A, no B, ...": a list that repeats its negator, so each negator reaches only to the next comma
_AFTER_LIST_COMMA = re.compile(r",\s*(?:and |or )?$")
_PRIORITY = {ABSENT: 0, UNCERTAIN: 1, PRESENT: 2}


class SentenceContext:
    """Triggers, terminators and word positions of one normalised sentence."""

    def __init__(self, text: str):
        self.text = text
        self._word_starts = [m.start() for m in _WORD.finditer(text)]
        taken: list[tuple[int, int]] = [m.span() for m in _PSEUDO.finditer(text)]
        self.triggers = [Trigger(m.start(), m.end(), UNCERTAIN, POST) for m in _QUESTION_MARK.finditer(text)]
        for pattern, state, direction in _TRIGGERS:
            for match in pattern.finditer(text):
                if not _overlaps(match.span(), taken):
                    taken.append(match.span())
                    self.triggers.append(Trigger(match.start(), match.end(), state, direction))
        self._terminators = sorted(m.start() for m in _TERMINATOR.finditer(text) if not _overlaps(m.span(), taken))
        negators = sorted(t.start for t in self.triggers if t.state == ABSENT and t.direction == PRE)
        self._repeated_negator = any(_AFTER_LIST_COMMA.search(text, 0, start) for start in negators[1:])

    def words_between(self, start: int, end: int) -> int:
        if end <= start:
            return 0
        return bisect.bisect_left(self._word_starts, end) - bisect.bisect_left(self._word_starts, start)

    def terminated(self, start: int, end: int) -> bool:
        index = bisect.bisect_left(self._terminators, start)
        return index < len(self._terminators) and self._terminators[index] < end

    def reach(self, trigger: Trigger, start: int, end: int) -> int | None:
        """Words from ``trigger`` to the mention [start, end), or None when it does not reach it."""
        if trigger.direction in (PRE, BOTH, RELATIVE) and trigger.start < end and trigger.end <= end:
            if trigger.end > start:  # inside the mention: "heart is not enlarged"
                return 0
            if not self.terminated(trigger.end, start) and not self._list_item_ends(trigger, start):
                return self.words_between(trigger.end, start)
        if trigger.direction in (POST, BOTH) and trigger.start >= end:
            distance = self.words_between(end, trigger.start)
            if distance <= BACKWARD_WINDOW_WORDS and not self.terminated(end, trigger.start):
                return distance
        if trigger.direction == RELATIVE and trigger.start >= end:
            distance = self.words_between(end, trigger.start)
            if distance <= RELATIVE_HEAD_WORDS and not _PAST_THE_HEAD.search(self.text, end, trigger.start):
                return distance
        return None

    def _list_item_ends(self, trigger: Trigger, start: int) -> bool:
        """In a list that repeats its negator ("no A, no B, calcifications and dense C"), an item after a comma
        without a negator of its own is outside the earlier negators' reach."""
        return self._repeated_negator and trigger.state == ABSENT and "," in self.text[trigger.end:start]

    def explanation(self, end: int, other_start: int) -> int | None:
        """ABSENT, or UNCERTAIN when hedged, if the mention ending at ``end`` is said to be the thing starting at
        ``other_start`` ("nodular density ... represents a nipple shadow"); None if the words between do not say so."""
        between = self.text[end:other_start]
        identities = list(_IDENTITY_WORDS.finditer(between))
        if (not identities or _STOP_WORDS.search(between)
                or self.words_between(end, other_start) > BACKWARD_WINDOW_WORDS
                or not _IDENTITY_GAP.fullmatch(between[identities[-1].end():])):
            return None
        return UNCERTAIN if _HEDGE_WORDS.search(between) else ABSENT

    def assertion(self, start: int, end: int, stated: int = PRESENT) -> int:
        """The state a mention spanning [start, end), stated as ``stated``, has in this sentence."""
        reaching = {
            trigger: distance for trigger in self.triggers
            if (distance := self.reach(trigger, start, end)) is not None
        }
        if not reaching:
            return stated
        chain = [min(reaching, key=reaching.__getitem__)]
        for trigger in chain:  # grows while adjacent triggers join: "may be compatible with", "not likely"
            chain += [other for other in reaching if other not in chain and self._adjacent(trigger, other)]
        return apply_assertion(stated, min((t.state for t in chain), key=_PRIORITY.__getitem__))

    def _adjacent(self, first: Trigger, second: Trigger) -> bool:
        left, right = sorted((first, second), key=lambda t: t.start)
        return self.words_between(left.end, right.start) == 0


def apply_assertion(stated: int, trigger_state: int) -> int:
    """Negation and hedging override what a phrase states; probable existence keeps it (a sign stays uncertain)."""
    return stated if trigger_state == PRESENT else trigger_state


def _overlaps(span: tuple[int, int], taken: list[tuple[int, int]]) -> bool:
    return any(s < span[1] and span[0] < e for s, e in taken)
