"""flax.linen modules: the GPT decoder (more families join here)."""
from jaxsim.models.transformer import GPT, build

__all__ = ["GPT", "build"]
