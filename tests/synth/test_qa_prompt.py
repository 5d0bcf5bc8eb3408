"""The shipped qa prompt and schema: what a small teacher copied before (a placeholder shape, "Ask Question 1")."""

from __future__ import annotations

import jsonschema
import pytest

from lmsmith.synth.kinds import QUESTION_CHARS, qa_schema
from lmsmith.synth.prompts import PromptTemplate

PASSAGE = "The cellar door sticks in wet weather: lift the handle before you turn the key."


@pytest.mark.parametrize("n, asks", [(1, "one question"), (3, "3 different questions")])
def test_the_qa_prompt_asks_for_n_questions_and_ends_with_the_passage(n, asks):
    prompt = PromptTemplate("qa").render(passage=PASSAGE, n=n, max_chars=400)
    assert asks in prompt
    assert prompt.rstrip().endswith(PASSAGE + '\n"""')  # the passage last, nearest to where the answer starts
    assert '"..."' not in prompt  # a shape of placeholders is what a 135M teacher wrote back word for word


def test_the_qa_schema_refuses_a_stub_of_a_question_and_describes_its_fields():
    schema = qa_schema(2, 400)
    jsonschema.validate({"items": [{"question": "How do I open the cellar door?", "answer": "Lift the handle."}]},
                        schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"items": [{"question": "x" * (QUESTION_CHARS - 1), "answer": "Lift it."}]}, schema)
    with pytest.raises(jsonschema.ValidationError):  # at most n items
        jsonschema.validate({"items": [{"question": "How do I open the cellar door?", "answer": "Lift it."}] * 3},
                            schema)
    fields = schema["properties"]["items"]["items"]["properties"]
    assert all(field["description"] for field in fields.values())
