"""Lesion masks: decoding source localisations, label maps, lesion attributes."""
