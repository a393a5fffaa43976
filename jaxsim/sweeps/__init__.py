"""The only layer that jits/vmaps/shards across runs, writes files, checkpoints and resumes."""
from jaxsim.sweeps.run import resume, start

__all__ = ["resume", "start"]
