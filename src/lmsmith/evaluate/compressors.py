"""Compression as a yardstick: what general-purpose compressors reach on the bytes a model was scored on.

A language model is a compressor: with arithmetic coding, a model that assigns the text a loss of
L bits per byte stores it in about L bits per byte. So the compressors every machine has give a
learner a scale for bits per byte: a model worse than `gzip -9` has not yet learned what a
dictionary of repeated strings knows; one better than `xz -9e` predicts the text better than a
long-range match finder with a context model does.

Each compressor runs on the whole scored text at once, at its strongest setting, through Python's
own modules (zlib for gzip's format, bz2, lzma), so no program needs to be installed.
"""

from __future__ import annotations

import bz2
import gzip
import lzma

COMPRESSORS = {
    "gzip -9": lambda data: gzip.compress(data, compresslevel=9, mtime=0),
    "bzip2 -9": lambda data: bz2.compress(data, compresslevel=9),
    "xz -9e": lambda data: lzma.compress(data, preset=9 | lzma.PRESET_EXTREME),
}


def compressor_bits_per_byte(data: bytes) -> dict[str, float]:
    """Bits per byte of `data` under each compressor (the compressed size's bits over the original's bytes)."""
    if not data:
        return {}
    return {name: 8 * len(compress(data)) / len(data) for name, compress in COMPRESSORS.items()}
