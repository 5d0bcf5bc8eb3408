"""Export: a model directory into the file formats other runtimes read, one module per format.

    gguf    llama.cpp and Ollama (`lmsmith export MODEL -o model.gguf`, `--ollama` for a Modelfile too)

Each format says exactly which model settings it can express and refuses the rest, never approximates.
"""
