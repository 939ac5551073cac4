"""Fine-tuning baseline (Arora et al. Table 1): ``python recipes/finetune.py suite=halfcheetah-arora6 seed=0``.

Trains on ``source_task``, fine-tunes the last actor/critic layers on ``target_task``, evaluates both
(forgetting). Small budget: ``config=recipes/configs/arora_finetune_demo.yaml``.
Keys and defaults: ``tdmt.algos.finetune.Config``.
"""

from tdmt.algos import recipe_main

if __name__ == "__main__":
    recipe_main("finetune")
