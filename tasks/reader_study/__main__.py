"""``python -m cxrsynth.tasks.reader_study KEY ANSWERS...``: score exported answer files."""

import sys

from cxrsynth.tasks.reader_study.cli import main

sys.exit(main())
