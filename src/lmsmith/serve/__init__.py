"""Putting a model to work: an OpenAI-compatible server and a terminal chat.

    engine.py    the decode loop: continuous batching over KV cache slots; knows nothing of HTTP
    choices.py   one HTTP request's choices, followed from engine events to text
    protocol.py  the OpenAI request bodies, read and checked against the limits
    errors.py    errors in OpenAI's JSON shape
    api.py       the FastAPI app: /v1/models, /v1/completions, /v1/chat/completions
    server.py    `lmsmith serve`: load, bind, run uvicorn, stop cleanly
    chat.py      `lmsmith chat`: a streamed conversation in the terminal
    config.py    the serve: section
"""
