"""The only layer that jits/vmaps/shards across runs, writes files, checkpoints and resumes."""
from jaxsim.sweeps.run import dry_run, resume, start

__all__ = ["dry_run", "resume", "start"]
