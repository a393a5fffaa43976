"""flax.linen modules: the GPT decoder and the BERT-style encoder, built from a ModelConfig."""
from jaxsim.config import ModelConfig
from jaxsim.models import encoder, transformer
from jaxsim.models.encoder import Encoder
from jaxsim.models.transformer import GPT

BUILDERS = {"gpt": transformer.build, "encoder": encoder.build}


def build(model: ModelConfig, vocab_size: int, max_length: int):
    return BUILDERS[model.name](model, vocab_size, max_length)


__all__ = ["GPT", "Encoder", "build"]
