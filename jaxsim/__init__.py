"""jaxsim: pure task generators and jit/vmap-compiled training loops that train whole
phase-diagram sweeps of small models as one program."""
__version__ = "0.1.0"
