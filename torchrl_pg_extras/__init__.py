"""TorchRL loss modules for REINFORCE, TRPO and GRPO (any env, not only LLMs).

* losses: :class:`REINFORCELoss`, :class:`TRPOLoss` (+ :class:`TRPOStepper` for ``torchrl.trainers.Trainer``),
  :class:`GRPOLoss`;
* advantage modules: :class:`MonteCarloEstimator`, :class:`GroupRelativeAdvantage`;
* GRPO groups on any batched env and any collector: :class:`GroupedEnv` (same-seed groups from
  :class:`pg_extras.GroupScheduler`) and :class:`GroupBatcher` (batches of whole groups, policy versions, env steps).

The maths is the shared core's (:mod:`pg_extras`). Example::

    >>> from torchrl_pg_extras import GRPOLoss, GroupBatcher, GroupedEnv, GroupRelativeAdvantage, REINFORCELoss, TRPOLoss
"""

from pg_extras.version import __version__
from torchrl_pg_extras._base import PolicyGradientKeys
from torchrl_pg_extras.collectors import GroupBatcher
from torchrl_pg_extras.envs import ID_NAMESPACE, GreedyMemberPolicy, GroupedEnv
from torchrl_pg_extras.grpo import GRPOLoss
from torchrl_pg_extras.reinforce import REINFORCELoss
from torchrl_pg_extras.trpo import TRPOLoss, TRPOStepper
from torchrl_pg_extras.value import GroupRelativeAdvantage, MonteCarloEstimator

__all__ = [
    "ID_NAMESPACE",
    "GRPOLoss",
    "GreedyMemberPolicy",
    "GroupBatcher",
    "GroupRelativeAdvantage",
    "GroupedEnv",
    "MonteCarloEstimator",
    "PolicyGradientKeys",
    "REINFORCELoss",
    "TRPOLoss",
    "TRPOStepper",
    "__version__",
]
