"""Knowledge editing on a trained knowledge_graph sweep, and representation shattering
(`jaxsim edit`; Nishi et al., ICML 2025).

Every run of a saved gpt sweep of the `knowledge_graph` testbed gets hundreds of counterfactual
edits (a trained fact's object moved d steps along its cycle) by each method (ROME, MEMIT, a
fine-tuning baseline, AlphaEdit), each edit a pure function vmapped over edits and runs; the
records say whether the edit took (efficacy, paraphrases), what it did to untouched facts (by
kind and by distance from the edited entity) and how far it moved the entities' geometry
(shattering R) (docs/editing.md).

methods.py  closed forms (ROME, MEMIT, AlphaEdit, R)   sites.py     where edits read and write
values.py   v* optimisation, fine-tuning              edits.py     the edits on a gpt's params
config.py   the `edit` section                        programs.py  the compiled study
driver.py   records and files                          summary.py, figures.py
"""

CONFIG_FILE, RECORDS, SUMMARY, ARRAYS = "edit.yaml", "edits.csv", "edits_summary.csv", "edits.npz"
