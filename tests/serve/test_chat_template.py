"""Chat templates as data: our Jinja renders exactly our training text; transformers agrees; models carry them."""

from __future__ import annotations

import json

import pytest
import torch

from lmsmith.core.errors import UserError
from lmsmith.text.chat_template import TEMPLATES, TemplateError, chat_format, jinja_source, read_chat_template, render
from lmsmith.text.tokenizer import load_tokenizer

EOT = "<|endoftext|>"
CONVERSATIONS = [
    [("user", "What is 2+2?")],
    [("user", "hi"), ("assistant", "hello")],
    [("system", "Be brief."), ("user", "2+2?"), ("assistant", "4"), ("user", "and 3+3?"), ("assistant", "6")],
    [("system", "Answer in SQL."), ("user", "all customers\nplease"), ("assistant", "SELECT * FROM customers;")],
]


def as_dicts(conversation):
    return [{"role": role, "content": content} for role, content in conversation]


@pytest.mark.parametrize("name", TEMPLATES)
@pytest.mark.parametrize("conversation", CONVERSATIONS, ids=range(len(CONVERSATIONS)))
def test_the_jinja_of_each_template_renders_the_text_training_masks_are_computed_from(name, conversation):
    template, source = TEMPLATES[name], jinja_source(TEMPLATES[name])
    trained_text = "".join(s.text for s in template.render(conversation, EOT))
    assert render(source, as_dicts(conversation), eos_token=EOT) == trained_text
    prompted = render(source, as_dicts(conversation), eos_token=EOT, add_generation_prompt=True)
    assert prompted == template.prompt(conversation, EOT)


@pytest.mark.parametrize("name", TEMPLATES)
def test_transformers_apply_chat_template_renders_our_templates_the_same(name, char_tokenizer):
    transformers = pytest.importorskip("transformers")
    hf = transformers.PreTrainedTokenizerFast(tokenizer_object=char_tokenizer.backend, eos_token=EOT)
    hf.chat_template = jinja_source(TEMPLATES[name])
    for conversation in CONVERSATIONS:
        for generation in (False, True):
            ours = render(hf.chat_template, as_dicts(conversation), eos_token=EOT, add_generation_prompt=generation)
            theirs = hf.apply_chat_template(as_dicts(conversation), tokenize=False, add_generation_prompt=generation)
            assert ours == theirs


def test_an_unknown_role_is_refused_by_name():
    with pytest.raises(TemplateError, match="role 'robot'"):
        chat_format_for("chatml").prompt([{"role": "robot", "content": "beep"}])
    with pytest.raises(TemplateError, match="unknown role robot"):
        render(jinja_source(TEMPLATES["plain"]), [{"role": "robot", "content": "beep"}], eos_token=EOT)


def chat_format_for(name):
    from lmsmith.text.tokenizer import train_char

    tokenizer = train_char(["abc"], special_tokens=list(TEMPLATES[name].special_tokens), show_progress=False)
    return chat_format(tokenizer, "test", template=name)


@pytest.mark.parametrize(("name", "end"), [("chatml", "<|im_end|>"), ("plain", EOT), ("raw", EOT)])
def test_the_token_that_ends_an_answer_is_found_in_the_template(name, end):
    assert chat_format_for(name).answer_end == end


def test_an_end_marker_that_is_not_one_token_is_still_found_as_text(char_tokenizer):
    assert chat_format(char_tokenizer, "test", template="chatml").answer_end == "<|im_end|>"  # spelt in characters


def test_a_model_without_a_template_says_how_to_get_one(model_dir):
    tokenizer = load_tokenizer(model_dir)
    assert tokenizer.chat_template is None
    with pytest.raises(UserError, match="no chat template.*--template chatml"):
        chat_format(tokenizer, model_dir)


def test_fine_tuning_with_a_template_writes_it_where_transformers_reads_it(chat_model_dir):
    config = json.loads((chat_model_dir / "tokenizer_config.json").read_text())
    assert config["chat_template"] == jinja_source(TEMPLATES["chatml"])
    assert load_tokenizer(chat_model_dir).chat_template == config["chat_template"]
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoTokenizer.from_pretrained(str(chat_model_dir))
    messages = [{"role": "user", "content": "1+2="}]
    ours = chat_format(load_tokenizer(chat_model_dir), chat_model_dir).prompt(messages)
    assert ours == hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert ours == "<|im_start|>user\n1+2=<|im_end|>\n<|im_start|>assistant\n"


# A Zephyr-style template, written here the way Hugging Face models write theirs: plain text
# markers, whitespace control, and the eos token after every message.
HF_TEMPLATE = (
    "{% for message in messages %}\n"
    "{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + eos_token }}\n"
    "{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}\n"
    "{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n"
    "{% endif %}\n"
    "{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n"
    "{% endfor %}"
)


def test_convert_from_hf_keeps_the_models_own_template_and_renders_it_as_transformers_does(tmp_path):
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer as Backend
    from tokenizers import decoders, models, pre_tokenizers, trainers

    from lmsmith.interop.convert import import_hf_dir

    backend = Backend(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.train_from_iterator(["hello there, how are you? fine thanks " * 20],
                                trainers.BpeTrainer(vocab_size=300, special_tokens=["</s>"], show_progress=False,
                                                    initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    hf_dir = tmp_path / "hf"
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=backend.get_vocab_size(), n_positions=32, n_embd=16, n_layer=1,
                                     n_head=2, eos_token_id=backend.token_to_id("</s>"))
    transformers.GPT2LMHeadModel(config).save_pretrained(str(hf_dir))
    backend.save(str(hf_dir / "tokenizer.json"))
    (hf_dir / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "</s>", "chat_template": HF_TEMPLATE}))
    assert read_chat_template(hf_dir) == HF_TEMPLATE

    import_hf_dir(hf_dir, tmp_path / "ours")
    tokenizer = load_tokenizer(tmp_path / "ours")
    assert tokenizer.chat_template == HF_TEMPLATE
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(str(hf_dir))
    for conversation in CONVERSATIONS:
        ours = chat_format(tokenizer, tmp_path / "ours").prompt(as_dicts(conversation))
        assert ours == hf_tokenizer.apply_chat_template(as_dicts(conversation), tokenize=False,
                                                        add_generation_prompt=True)
    assert chat_format(tokenizer, tmp_path / "ours").answer_end == "</s>"
