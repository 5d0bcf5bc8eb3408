"""Chat templates render conversations, mark what is trained, and grow tokenizers that lack their tokens."""

from __future__ import annotations

import pytest
import torch

from lmsmith.core.errors import UserError
from lmsmith.finetune.vocabulary import add_special_tokens, grow_vocabulary, missing_special_tokens
from lmsmith.text.chat_template import TEMPLATES, get_template

CHAT = [("system", "Be brief."), ("user", "2+2?"), ("assistant", "4"), ("user", "and 3+3?"), ("assistant", "6")]


def test_chatml_renders_the_standard_layout_and_trains_only_answers():
    segments = get_template("chatml").render(CHAT, eot="<|endoftext|>")
    text = "".join(s.text for s in segments)
    assert text == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n"
                    "<|im_start|>assistant\n4<|im_end|>\n<|im_start|>user\nand 3+3?<|im_end|>\n"
                    "<|im_start|>assistant\n6<|im_end|>")
    assert "".join(s.text for s in segments if s.trained) == "4<|im_end|>6<|im_end|>"


@pytest.mark.parametrize("name", TEMPLATES)
def test_the_generation_prompt_is_the_rendered_text_up_to_the_answer(name):
    template = get_template(name)
    messages = [("user", "What is the capital of France?"), ("assistant", "Paris")]
    full = "".join(s.text for s in template.render(messages, "<|endoftext|>"))
    prompt = template.prompt("What is the capital of France?", "<|endoftext|>")
    assert full == prompt + "Paris" + template.answer_end("<|endoftext|>")


def test_plain_and_raw_end_answers_with_end_of_text():
    assert get_template("plain").prompt("hi", "<E>") == "### Prompt:\nhi\n\n### Response:\n"
    assert get_template("plain").answer_end("<E>") == "<E>"
    assert get_template("raw").prompt("-- all customers\n", "<E>") == "-- all customers\n"


def test_unknown_template_names_the_known_ones():
    with pytest.raises(UserError, match="unknown chat template 'alpaca'.*chatml.*plain.*raw"):
        get_template("alpaca")


def test_missing_special_tokens_are_added_as_single_tokens_and_the_embedding_grows(char_tokenizer, make_model):
    model = make_model(char_tokenizer.vocab_size)
    missing = missing_special_tokens(char_tokenizer, TEMPLATES["chatml"].special_tokens)
    assert missing == ["<|im_start|>", "<|im_end|>"]
    assert len(char_tokenizer.encode("<|im_start|>")) > 1  # spelt out in characters before
    grown = add_special_tokens(char_tokenizer, missing)
    assert grown.vocab_size == char_tokenizer.vocab_size + 2
    start, end = grown.encode("<|im_start|>user<|im_end|>")[0], grown.encode("<|im_end|>")
    assert start == char_tokenizer.vocab_size and end == [char_tokenizer.vocab_size + 1]
    assert missing_special_tokens(grown, TEMPLATES["chatml"].special_tokens) == []
    assert grown.decode(grown.encode("<|im_start|>ab<|im_end|>")) == "<|im_start|>ab<|im_end|>"

    idx = torch.randint(0, char_tokenizer.vocab_size, (1, 8))
    old_logits = model(idx).logits
    old_rows = model.tok_emb.weight.detach().clone()
    assert grow_vocabulary(model, grown.vocab_size) == 2
    assert model.head.weight is model.tok_emb.weight  # still tied
    new_logits = model(idx).logits
    torch.testing.assert_close(new_logits[..., :char_tokenizer.vocab_size], old_logits)
    torch.testing.assert_close(model.tok_emb.weight[-1], old_rows.mean(dim=0))
    assert grow_vocabulary(model, grown.vocab_size) == 0
