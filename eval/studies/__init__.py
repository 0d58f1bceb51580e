"""Studies behind the documentation's tables: ``couplednoise study NAME``.

A study is a module with ``add_arguments(parser)`` and ``run(args) -> int`` that writes its
tables (markdown + JSON) and figures to ``--out`` with 95% intervals, paired on seeds.
"""

# name -> (module, one-line summary)
STUDIES: dict[str, tuple[str, str]] = {
    "lab": (
        "couplednoise.eval.studies.lab",
        "coverage and alignment of every coupling vs independent on the closed-form lab",
    ),
    "baselines": (
        "couplednoise.eval.studies.baselines",
        "coupled noise vs CNO and CADS on the lab, and coupled noise as their initialisation",
    ),
    "pool": ("couplednoise.eval.studies.pool", "pool-partition couplings by predictor on the lab"),
    "background-lab": (
        "couplednoise.eval.studies.background_lab",
        "the fixed-object task on the lab against ground truth (shares x dilations)",
    ),
    "background-learned-lab": (
        "couplednoise.eval.studies.background_learned_lab",
        "the fixed-object task on the learned lab: subspace vs SDEdit and blended inpainting",
    ),
    "terrain": (
        "couplednoise.eval.studies.terrain",
        "every coupling vs independent on the trained terrain model",
    ),
    "learned-lab": (
        "couplednoise.eval.studies.learned_lab",
        "every coupling vs independent on the learned lab",
    ),
}
