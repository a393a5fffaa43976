"""Steering interventions on a trained sweep, evaluated by likelihoods (`jaxsim steer`).

A behaviour (a testbed's `Behaviour`: prompts with a matching and a non-matching continuation,
exact from the task's ground truth) is promoted and suppressed in every run of a saved gpt
sweep by each method (CAA, ITI, SAE-latent steering, random directions) at each layer and
multiplier; the metrics are likelihood-based and referenced to the unsteered model, with the
loss on the task's held-out data as the side effect (docs/steering.md).

config.py   the `steer` section        methods.py  fit activations -> unit interventions
metrics.py  steered likelihoods        driver.py   the compiled programs, records, files
figures.py  the figures
"""

CONFIG_FILE, RECORDS, VECTORS = "steer.yaml", "steering.csv", "steering_vectors.npz"
