"""Runs that cannot learn: one vocabulary of causes and fixes, warned once per run (docs/design.md "Conventions").

A policy-gradient update can be a no-op without any error: every group-relative advantage is zero when no group has
a spread of returns (MountainCar before any member reaches the flag), a filter can drop every group, a mask can leave
no step in the loss, an env can outlast every rollout. Both adapters report such runs through one
:class:`SignalMonitor` per algorithm / module, which warns once per cause with a :class:`NoSignalWarning` that names
the cause and the fix (the texts of :data:`NO_SIGNAL_CAUSES`). A cause that is expected now and then (one update
without a complete group) warns only after ``patience`` updates in a row.

Example::

    >>> import warnings
    >>> monitor = SignalMonitor("GRPO", patience=2)
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     _ = [monitor.observe("zero_spread", True) for _ in range(3)]
    >>> len(caught), caught[0].category.__name__
    (1, 'NoSignalWarning')
"""

from __future__ import annotations

import warnings

__all__ = ["NO_SIGNAL_CAUSES", "NoSignalWarning", "SignalMonitor"]


class NoSignalWarning(RuntimeWarning):
    """A run whose updates cannot change the policy (or are skipped): the message names the cause and the fix."""


#: cause -> (what happened, how to fix it). ``{patience}`` is the number of updates in a row.
NO_SIGNAL_CAUSES: dict[str, tuple[str, str]] = {
    "zero_spread": (
        "every group had zero spread of returns for {patience} updates in a row (rollout/frac_zero_std_groups = 1), so "
        "every group-relative advantage and the policy gradient are zero: no member does better than its group",
        "shape the reward so that members differ (e.g. a progress bonus), raise group_size or the exploration "
        "(ent_coef, log_std_init), or use an estimator with a critic (TRPO / REINFORCEWithBaseline)",
    ),
    "all_filtered": (
        "dynamic_sampling / keep_return_bounds dropped every complete group ({detail}: each had zero spread of returns "
        "or a mean return outside the bounds), so nothing is trained on",
        "turn dynamic_sampling off or widen keep_return_bounds until the task gives groups with different returns",
    ),
    "all_truncated_masked": (
        "every episode of the update ended by truncation and mask_truncated_completions=True leaves them all out of "
        "the loss, so the update does nothing",
        "raise the time limit (TimeLimit max_episode_steps) above the episodes' length, or pass "
        "mask_truncated_completions=False",
    ),
    "zero_advantage": (
        "every advantage of the update is zero for {patience} updates in a row ({detail}), so the policy gradient is zero",
        "check the reward: a constant per-step reward with equal episode lengths, or a zero reward, gives every "
        "episode the same return; shape the reward or change advantage_mode",
    ),
    "no_complete_group": (
        "no group completed in {patience} rollouts in a row, so no update was made: a group needs group_size episodes "
        "that end, and these episodes outlast the rollouts",
        "wrap the env in a TimeLimit (gymnasium.wrappers.TimeLimit or gym.make(..., max_episode_steps=...)) or raise n_steps",
    ),
    "gamma_zero": (
        "gamma=0: each step's return is its own reward, so the gradient ignores every later reward (and a constant "
        "per-step reward such as CartPole's gives every step the same return)",
        "use a discount in (0, 1], e.g. gamma=0.99",
    ),
}


class SignalMonitor:
    """Warn once per cause of :data:`NO_SIGNAL_CAUSES` for one algorithm or module (``owner`` starts the message).

    :param owner: the name the messages start with (e.g. ``"GRPO"``).
    :param patience: updates in a row a cause must be observed before it warns (causes that never occur by chance
        warn at once: :meth:`observe` with ``immediate=True``).
    """

    def __init__(self, owner: str, patience: int = 5) -> None:
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise ValueError(f"patience must be an integer >= 1, got {patience!r}.")
        self.owner = owner
        self.patience = patience
        self.streaks: dict[str, int] = {}
        self.warned: set[str] = set()

    def observe(self, cause: str, present: bool, immediate: bool = False, detail: str = "") -> bool:
        """Record whether ``cause`` holds at this update; warn (once) when it has held ``patience`` times in a row
        (at once with ``immediate``). Returns whether this call warned."""
        if cause not in NO_SIGNAL_CAUSES:
            raise ValueError(f"Unknown no-signal cause {cause!r}: use one of {', '.join(map(repr, NO_SIGNAL_CAUSES))}.")
        if not present:
            self.streaks[cause] = 0
            return False
        self.streaks[cause] = self.streaks.get(cause, 0) + 1
        if cause in self.warned or (not immediate and self.streaks[cause] < self.patience):
            return False
        self.warned.add(cause)
        what, fix = NO_SIGNAL_CAUSES[cause]
        message = f"{self.owner}: {what.format(patience=self.patience, detail=detail)}. Fix: {fix}."
        warnings.warn(message, NoSignalWarning, stacklevel=3)
        return True
