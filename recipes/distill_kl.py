"""Multi-task KL distillation (Arora et al.): ``python recipes/distill_kl.py suite=halfcheetah-arora6 seed=0``.

Teachers are trained first in ``<run_dir>/teachers`` (``teacher_algo=a2c`` as in the paper, or ``sac``), or
reused with ``teacher_path=.../model.pt``. ``direction=reverse`` uses KL(student‖teacher). Small budget:
``config=recipes/configs/arora_distill_demo.yaml``. Keys and defaults: ``tdmt.algos.distill_kl.Config``.
"""

from tdmt.algos import recipe_main

if __name__ == "__main__":
    recipe_main("distill_kl")
