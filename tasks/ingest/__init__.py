"""The ingest stage's work: source records -> pseudonymised, decoded, working-resolution images.

- ``select``: which records are taken (views, cap) and their sequential pseudonyms.
- ``images``: per-image decode, resize and mask copies (parallel, in the flow); quarantine on error.
- ``outputs``: the manifest, localisations, quarantine list, input digest, metrics, sample grid.
- ``splits``: the patient-level train/val/test split, fixed once here.
"""
