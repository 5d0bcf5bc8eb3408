"""index.html: the explanation as one self-contained page (pictures inside it, readable offline).

Every number on the page is read from the explanation dict (the same one explain.json holds).
"""

from __future__ import annotations

import time

from lmsmith.explain.pictures import shown
from lmsmith.report.page import STYLE, esc, html_table, image

EXTRA_STYLE = """
.tok { display: inline-block; border: 1px solid #bcd; border-radius: 4px; margin: 2px; padding: 1px 4px;
       font-family: ui-monospace, Menlo, Consolas, monospace; background: #f3f7fb; text-align: center; }
.tok small { display: block; color: #789; font-size: 0.72em; } .tok.special { background: #fdf0d5; }
td, th { text-align: left; }
.caption { color: #444; font-size: 0.93em; max-width: 52em; } code { background: #f6f8fa; padding: 0 3px; }
"""


def caption(text: str) -> str:
    return f'<p class="caption">{esc(text)}</p>'


def token_chips(tokens: list[dict]) -> str:
    chips = "".join(f'<span class="tok{" special" if t["special"] else ""}">{esc(shown(t["text"]))}'
                    f'<small>{t["id"]}</small></span>' for t in tokens)
    return f"<p>{chips}</p>"


def tokens_section(e: dict) -> str:
    tokens = e["tokens"]
    parts = ["<h2>1. Tokens: the text in bite-sized pieces</h2>", token_chips(tokens), caption(
        f"The model never sees letters: the tokenizer cuts the text into {len(tokens)} pieces and gives each an id "
        "(the small number). ␣ is a space, ↵ a line break. The model's vocabulary has "
        f"{e['model']['vocab_size']:,} such pieces.")]
    if e.get("merges"):
        rows, seen = [], set()
        for tree in e["merges"]:
            if tree["id"] in seen or not tree["parts"]:
                continue
            seen.add(tree["id"])
            steps = merge_steps_text(tree)
            rows.append([shown(tree["text"]), tree["id"], steps])
        if rows:
            header = ["piece", "id", "merges, first learned first"]
            parts.append("<h3>How BPE built each piece</h3>" + html_table(header, rows))
            parts.append(caption("Byte-pair encoding starts from single bytes and, in training, keeps joining the "
                                 "pair of neighbouring pieces seen most often. The merge number says when a rule was "
                                 "learned: low numbers are the most common pairs."))
    return "".join(parts)


def merge_steps_text(tree: dict) -> str:
    from lmsmith.explain.tokens import merge_steps

    return "; ".join(f"{shown(s['left'])} + {shown(s['right'])} → {shown(s['result'])} (#{s['merge']})"
                     for s in merge_steps(tree))


def attention_section(e: dict, pngs: dict[str, bytes]) -> str:
    layers, heads = e["model"]["n_layer"], e["model"]["n_head"]
    parts = ["<h2>2. Attention: where each token looks</h2>", caption(
        f"Each of the {layers} layers has {heads} attention heads. In a heatmap, row t is token t and the colour of "
        "each square in that row is how much of its attention goes to the token of that column. A token sees only "
        "itself and the tokens before it, so the upper right is empty; each row adds up to 1.")]
    for layer in range(layers):
        name = f"attention_layer{layer}.png"
        if name in pngs:
            parts.append(image(pngs[name], f"attention patterns of layer {layer}"))
    if e.get("focus"):
        parts.append(focus_part(e, pngs))
    return "".join(parts)


def focus_part(e: dict, pngs: dict[str, bytes]) -> str:
    focus, tokens = e["focus"], e["tokens"]
    name = f"{shown(focus['text'])} (#{focus['position']})"
    rows = []
    for head in focus["per_head"]:
        looked = ", ".join(f"{shown(tokens[r['position']]['text'])} #{r['position']} {r['weight']:.2f}"
                           for r in head["earlier"][:3]) or "(no earlier tokens)"
        rows.append([f"layer {head['layer']}, head {head['head']}", looked, f"{head['self']:.2f}"])
    parts = [f"<h3>What {esc(name)} looks at</h3>"]
    if "focus.png" in pngs:
        parts.append(image(pngs["focus.png"], f"what {name} looks at"))
    parts.append(html_table(["head", "earlier tokens it looks at most (weight)", "weight on itself"], rows))
    parts.append(caption("Each head pulls information from other tokens into this one. A head that links a pronoun "
                         "to the noun it stands for puts most of its weight on that noun."))
    return "".join(parts)


def lens_section(e: dict, pngs: dict[str, bytes]) -> str:
    lens, vocab, tokens = e["logit_lens"], e["vocab"], e["tokens"]
    position = e["focus"]["position"] if e.get("focus") else len(tokens) - 1
    rows = [[layer, ", ".join(f"{shown(vocab.get(str(i), '?'))} {p:.2f}" for i, p in zip(lens["ids"][n][position],
                                                                                  lens["probs"][n][position]))]
            for n, layer in enumerate(lens["layers"])]
    return ("<h2>3. Layers refine a guess (the logit lens)</h2>" + image(pngs["logit_lens.png"], "logit lens")
            + caption("Every block adds its bit to a running sum, the residual stream. Reading that sum out early, "
                      "through the model's own final norm and output head, shows what it would guess if it stopped "
                      "there. The last row is the model's real guess.")
            + f"<h3>After {esc(shown(tokens[position]['text']))} (#{position}), layer by layer</h3>"
            + html_table(["read out", "top guesses for the next token (probability)"], rows))


def next_section(e: dict, pngs: dict[str, bytes]) -> str:
    nxt, vocab, tokens = e["next_token"], e["vocab"], e["tokens"]
    greedy = nxt["greedy"]
    picks = [f"at temperature 0 (always the most likely): {shown(vocab.get(str(greedy['id']), '?'))} "
             f"(probability {greedy['probability']:.3f})"]
    if "sampled" in nxt:
        s = nxt["sampled"]
        picks.append(f"at temperature {nxt['temperature']:g} (seed {s['seed']}): {shown(vocab.get(str(s['id']), '?'))} "
                     f"(probability {s['probability']:.3f} at that temperature)")
    rows = [[f"{shown(tokens[t]['text'])} #{t}",
             ", ".join(f"{shown(vocab.get(str(i), '?'))} {p:.2f}" for i, p in zip(nxt["ids"][t], nxt["probs"][t]))]
            for t in range(len(tokens))]
    return ("<h2>4. The next token</h2>" + image(pngs["next_token.png"], "next token probabilities")
            + "<p>The model would write next " + "; ".join(esc(p) for p in picks) + ".</p>"
            + caption("The model gives every token of its vocabulary a probability of coming next. Temperature 0 "
                      "takes the most likely one; a higher temperature flattens the odds and draws at random, "
                      "which is how `lmsmith generate` writes.")
            + "<details><summary>the top guesses after every token</summary>"
            + html_table(["after", "top guesses (probability)"], rows) + "</details>")


def embeddings_section(e: dict, pngs: dict[str, bytes]) -> str:
    emb, vocab = e["embeddings"], e["vocab"]
    rows = [[shown(vocab.get(token, "?")), ", ".join(f"{shown(vocab.get(str(n['id']), '?'))} {n['cosine']:.2f}"
                                                    for n in near)]
            for token, near in list(emb["nearest"].items())[:20]]
    return ("<h2>5. Embeddings: tokens as points in space</h2>"
            + html_table(["token", "nearest tokens in the embedding table (cosine similarity)"], rows)
            + caption("Each token id has one learned vector. Tokens the model uses alike point the same way; "
                      "cosine similarity (1: same direction, 0: unrelated) finds a token's neighbours.")
            + image(pngs["embedding_map.png"], "embedding map")
            + caption(f"The vectors of {len(emb['map']['ids'])} tokens ({emb['map']['source']}) flattened onto "
                      "their two main directions (PCA). Tokens close together are used alike."))


def heads_section(h: dict, pngs: dict[str, bytes]) -> str:
    rows = [[f"layer {r['layer']}, head {r['head']}", r["role"] or "-", f"{r['previous']:.2f}", f"{r['first']:.2f}",
             f"{r['induction']:.2f}", f"{r['distance']:.1f}"] for r in h["table"]]
    b = h["baseline"]
    return ("<h2>6. What each head does, measured</h2>" + image(pngs["heads.png"], "head scores")
            + html_table(["head", "role", "previous token", "first token", "induction", "mean distance"], rows)
            + caption(f"Measured over {h['windows']} held-out windows of {h['window_tokens']} tokens (induction: on "
                      f"random sequences of {h['repeat_half']} tokens shown twice). previous: attention on the token "
                      "just before; first token: on the window's first token (an 'attention sink'); induction: from "
                      "a repeated token, on the token that followed its earlier occurrence; mean distance: how far "
                      f"back it looks. A head spreading attention evenly would score {b['previous']:.2f}, "
                      f"{b['first']:.2f}, {b['induction']:.2f} and {b['distance']:.1f}; a head gets a role when its "
                      f"score is at least {h['role_min']} and {h['role_over_baseline']:g} times that."))


def render(e: dict, pngs: dict[str, bytes], model_path: str) -> str:
    title = "lmsmith explain"
    body = [f"<h1>{esc(title)}</h1>",
            f'<p class="sub">Model {esc(model_path)} ({e["model"]["n_layer"]} layers, {e["model"]["n_head"]} heads, '
            f"context {e['model']['block_size']}); made {esc(time.strftime('%Y-%m-%d %H:%M'))}.</p>"]
    if "tokens" in e:
        body.append(f"<pre>{esc(e['text'])}</pre>")
        if e.get("note"):
            body.append(f'<p class="note">Note: {esc(e["note"])}.</p>')
        body += [tokens_section(e), attention_section(e, pngs), lens_section(e, pngs), next_section(e, pngs),
                 embeddings_section(e, pngs)]
    if e.get("heads"):
        body.append(heads_section(e["heads"], pngs))
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{esc(title)}</title>"
            f"<style>{STYLE}{EXTRA_STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
