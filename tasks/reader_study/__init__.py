"""Reader study kit: a blinded, randomised set of real and synthetic radiographs as one
self-contained web page (``study``, ``page``, ``templates/index.html.j2``), and the scoring of the
answers readers export from it (``scoring``, ``summary``; ``python -m cxrsynth.tasks.reader_study
KEY ANSWERS...`` scores answer files)."""

from cxrsynth.tasks.reader_study.page import LIKERT, SOURCES, render_page
from cxrsynth.tasks.reader_study.scoring import answer_table, score, score_table
from cxrsynth.tasks.reader_study.study import Candidate, build_study, candidates, pick_real, png_base64, write_study

__all__ = ["LIKERT", "SOURCES", "Candidate", "answer_table", "build_study", "candidates", "pick_real",
           "png_base64", "render_page", "score", "score_table", "write_study"]
