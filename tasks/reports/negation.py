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
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass

from cxrsynth.tasks.findings import ABSENT, PRESENT, UNCERTAIN

PRE, POST, BOTH = "pre", "post", "both"
BACKWARD_WINDOW_WORDS = 12  # "consolidation, atelectasis and blunting in the left lower lobe have cleared"

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
    (r"(?:may|might|could) (?:also |well |possibly |potentially |in part )?"
     r"(?:represent|reflect|be|indicate|suggest|relate|correspond|account)\w*", UNCERTAIN, BOTH),
    (r"(?:is|are|was|were|felt to be|considered) unlikely|unlikely", ABSENT, BOTH),
    (r"(?:is|are|was|were) (?:possible|suspected|questioned|questionable|not certain|uncertain|equivocal|"
     r"also possible|not clear|considered)|(?:would be|is|are) a consideration", UNCERTAIN, POST),
    (r"(?:to )?rule out|r o|evaluate for|assess for|question of|questionable|question(?:ed)?|equivocal|"
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
     r"neither|removal of", ABSENT, PRE),
)
TERMINATOR_WORDS = (
    r"but|however|although|though|except|aside from|apart from|other than|whereas|while|yet|nevertheless|"
    r"which|that|who|where|otherwise|there (?:is|are|has|have)|and (?:the|there|a|an)"
)


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

    def words_between(self, start: int, end: int) -> int:
        if end <= start:
            return 0
        return bisect.bisect_left(self._word_starts, end) - bisect.bisect_left(self._word_starts, start)

    def terminated(self, start: int, end: int) -> bool:
        index = bisect.bisect_left(self._terminators, start)
        return index < len(self._terminators) and self._terminators[index] < end

    def reach(self, trigger: Trigger, start: int, end: int) -> int | None:
        """Words from ``trigger`` to the mention [start, end), or None when it does not reach it."""
        if trigger.direction in (PRE, BOTH) and trigger.start < end and trigger.end <= end:
            if trigger.end > start:  # inside the mention: "heart is not enlarged"
                return 0
            if not self.terminated(trigger.end, start):
                return self.words_between(trigger.end, start)
        if trigger.direction in (POST, BOTH) and trigger.start >= end:
            distance = self.words_between(end, trigger.start)
            if distance <= BACKWARD_WINDOW_WORDS and not self.terminated(end, trigger.start):
                return distance
        return None

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
