"""Every section a recipe or a `--config` file may hold, with the dataclass that checks it.

The stages read these sections (the registry says which stage reads which); the list lives here,
on the schema floor, so that reading a config never needs the stages' code.
"""

from __future__ import annotations

from lmsmith.schema.classifier import ClassifierConfig
from lmsmith.schema.curate import CurateConfig
from lmsmith.schema.evaluate import EvalConfig
from lmsmith.schema.exam import ExamConfig
from lmsmith.schema.explain import ExplainConfig
from lmsmith.schema.export import ExportConfig
from lmsmith.schema.finetune import FinetuneConfig
from lmsmith.schema.generate import GenerateConfig
from lmsmith.schema.model import InitConfig, ModelConfig
from lmsmith.schema.serve import ChatConfig, ServeConfig
from lmsmith.schema.sizing import SizingConfig
from lmsmith.schema.sweep import SweepConfig
from lmsmith.schema.synth import SynthConfig
from lmsmith.schema.text import TokenizeConfig, TokenizerConfig
from lmsmith.schema.train import TrainConfig

SECTIONS: dict[str, type] = {
    "curate": CurateConfig, "tokenizer": TokenizerConfig, "tokenize": TokenizeConfig, "model": ModelConfig,
    "init": InitConfig, "train": TrainConfig, "sizing": SizingConfig, "eval": EvalConfig, "generate": GenerateConfig,
    "finetune": FinetuneConfig, "export": ExportConfig, "explain": ExplainConfig, "serve": ServeConfig,
    "chat": ChatConfig, "sweep": SweepConfig, "exam": ExamConfig, "synth": SynthConfig,
    "classifier": ClassifierConfig,
}
# Top-level keys of a config file that are not sections: a training recipe's tokens and run directory,
# and a build recipe's list of steps (read by `lmsmith build`, left alone by every other verb).
FILE_KEYS = ("data", "out")
STEPS_KEY = "steps"
