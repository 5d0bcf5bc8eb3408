"""See inside a model: what a learner looks at, computed from the model itself.

The functions here compute plain arrays (numpy) and JSON-ready dicts; they draw nothing:

    trace.py        one forward pass that keeps every attention pattern and the residual stream
    tokens.py       how a text splits into pieces, and the BPE merges that built each piece
    attention.py    which earlier tokens each head looks at from a chosen (--focus) token
    lens.py         the logit lens (each layer's guess) and the next-token probabilities
    embeddings.py   nearest tokens in the embedding table, and a 2-D PCA map
    heads.py        what each head does, measured: previous-token, first-token, induction, distance
    explanation.py  all of these for one text, as the dict that explain.json holds

The renderers draw that dict: pictures.py (PNGs), page.py (the self-contained index.html) and
the page of `lmsmith serve`. stage.py is the `lmsmith explain` command.
"""
