"""RL Zoo hyperparameter files of pg-extras (installed as ``sb3_pg_extras.zoo_configs``).

One ``<algo>.yml`` per algorithm, read by ``python -m sb3_pg_extras.zoo`` when no ``-conf`` is given.
"""
