"""Curation: raw sources -> clean, deduplicated, privacy-redacted documents with held-out splits.

The pipeline is a list of small steps over a stream of documents (see `step.py`); each step
keeps a document, changes it, or drops it with a reason, and counts what it did.
"""
