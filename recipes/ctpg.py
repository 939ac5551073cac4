"""CTPG on a multi-task SAC backbone: ``python recipes/ctpg.py suite=metaworld-mt10 backbone=mhsac guide=ctpg seed=0``.

``guide=none`` is the backbone's Base run, ``guide=qmp`` the QMP baseline; ablations: ``policy_filter=false``,
``guide_block=success|none``, ``hindsight=false``, ``guide_step=5``. Keys and defaults: ``tdmt.algos.ctpg.Config``.
"""

from tdmt.algos import recipe_main

if __name__ == "__main__":
    recipe_main("ctpg")
