"""`task.name: safety_pcfg_finetune`: the registry entry of the fine-tuning testbed (defined in
the package's `__init__`)."""
from jaxsim.testbeds.safety_pcfg import FINETUNE as TESTBED

__all__ = ["TESTBED"]
