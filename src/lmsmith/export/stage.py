"""`lmsmith export`: a model as one GGUF file (gguf.py), or with --ollama a folder for Ollama (ollama.py)."""

from __future__ import annotations

from pathlib import Path

from lmsmith.export.gguf import GGUF_FILE, MODELFILE, export_gguf
from lmsmith.export.ollama import export_ollama
from lmsmith.schema.export import ExportConfig


def run(config, inputs: dict, out: str | Path, *, quiet: bool = False) -> dict:
    """The export stage: the model of `inputs["model"]` as a GGUF file at `out` (with --ollama: a directory
    holding model.gguf, a Modelfile and manifest.json). Returns what was written."""
    settings: ExportConfig = config.export
    if settings.ollama:
        result = export_ollama(inputs["model"], out, settings)
    else:
        result = export_gguf(inputs["model"], out, settings.quant)
    if not quiet:
        types = ", ".join(f"{n} {kind}" for kind, n in sorted(result["tensor_types"].items()))
        where = Path(out) / GGUF_FILE if settings.ollama else Path(out)
        print(f"exported {inputs['model']} -> {where} as llama.cpp architecture {result['architecture']}: "
              f"{result['bytes'] / 1e6:.1f} MB, tensors {types}")
        if settings.ollama:
            print(f"run it: ollama create NAME -f {Path(out) / MODELFILE} && ollama run NAME")
    return result
