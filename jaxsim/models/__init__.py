"""flax.linen modules: the GPT decoder, the BERT-style encoder and the structured-identity-mapping
models (mlp, symmetric) and the diffusion U-Net (unet), built from a ModelConfig."""
from jaxsim.config import ModelConfig
from jaxsim.models import encoder, mlp, transformer, unet
from jaxsim.models.encoder import Encoder
from jaxsim.models.mlp import scale_init
from jaxsim.models.transformer import GPT

BUILDERS = {"gpt": transformer.build, "encoder": encoder.build, "mlp": mlp.build_mlp,
            "symmetric": mlp.build_symmetric, "unet": unet.build}


def build(model: ModelConfig, vocab_size: int, max_length: int):
    return BUILDERS[model.name](model, vocab_size, max_length)


__all__ = ["GPT", "Encoder", "build", "scale_init"]
