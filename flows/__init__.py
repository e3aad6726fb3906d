"""Prefect flows: one per stage, the ``pipeline`` flow and the ``cxrsynth`` command."""

import os

# Servers started from here listen on loopback unless the environment names another host. Set
# before anything imports Prefect, which reads its settings once: `cxrsynth serve`'s runner
# webserver (off unless PREFECT_RUNNER_SERVER_ENABLE) would otherwise bind the name "localhost".
os.environ.setdefault("PREFECT_RUNNER_SERVER_HOST", "127.0.0.1")
