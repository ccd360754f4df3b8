"""TorchRL loss modules for REINFORCE, TRPO and GRPO (any env, not only LLMs).

* losses: :class:`REINFORCELoss`, :class:`TRPOLoss` (+ :class:`TRPOStepper` for ``torchrl.trainers.Trainer``),
  :class:`GRPOLoss`;
* advantage modules: :class:`MonteCarloEstimator`, :class:`GroupRelativeAdvantage`;
* GRPO groups for any env: the :class:`GroupReset` transform and the :class:`GroupBatcher` collector wrapper.

The maths is the shared core's (:mod:`pg_extras`). Example::

    >>> from torchrl_pg_extras import GRPOLoss, GroupRelativeAdvantage, GroupReset, REINFORCELoss, TRPOLoss
"""

from pg_extras.version import __version__
from torchrl_pg_extras.collectors import GroupBatcher
from torchrl_pg_extras.grpo import GRPOLoss
from torchrl_pg_extras.reinforce import REINFORCELoss
from torchrl_pg_extras.transforms import GroupReset
from torchrl_pg_extras.trpo import TRPOLoss, TRPOStepper
from torchrl_pg_extras.value import GroupRelativeAdvantage, MonteCarloEstimator

__all__ = [
    "GRPOLoss",
    "GroupBatcher",
    "GroupRelativeAdvantage",
    "GroupReset",
    "MonteCarloEstimator",
    "REINFORCELoss",
    "TRPOLoss",
    "TRPOStepper",
    "__version__",
]
