"""Smoke tests of the benchmark harness (benchmarks/run.py: tiny grid, one seed, temporary cache: the report is built,
a second call trains nothing and changes no file) and of the TorchRL runner (benchmarks/torchrl_runner.py: every
pipeline runs, the curve is well-formed, evaluation counts each episode once and stays out of the training clock)."""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import gymnasium as gym
import pytest
import torch
from tensordict import TensorDict, TensorDictBase

# torchrl's wheel installs its own top-level ``benchmarks`` folder into site-packages: put the repository first
_ROOT = str(Path(__file__).resolve().parents[1])
if sys.path[0] != _ROOT:
    sys.path.insert(0, _ROOT)
if getattr(sys.modules.get("benchmarks"), "__file__", "") is None:  # the namespace package was imported already
    del sys.modules["benchmarks"]

from benchmarks import torchrl_runner  # noqa: E402
from benchmarks.torchrl_runner import TORCHRL_ALGOS, run_torchrl  # noqa: E402

# tiny settings so that every pipeline yields a few batches within a couple of seconds
SMALL = {
    "torchrl_grpo": dict(num_envs=8, group_size=4, groups_per_batch=1, frames_per_batch=64, epochs=1),
    "torchrl_reinforce_pgx": dict(num_envs=8, trajs_per_batch=8),
    "torchrl_trpo": dict(num_envs=8, frames_per_batch=256, critic_updates=2),
    "torchrl_reinforce": dict(num_envs=8, steps_per_env=32),
    "torchrl_ppo": dict(num_envs=8, steps_per_env=32, epochs=2),
}


def test_grid_torchrl_pipelines_exist():
    from benchmarks import run

    assert set(run.OURS_TORCHRL) <= set(TORCHRL_ALGOS)
    for name in run.OURS_TORCHRL:  # the issue asks for these two envs at least
        assert {"CartPole-v1", "Pendulum-v1"} <= set(torchrl_runner.DEFAULTS[name])


def _tree(root: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(root.rglob("*")) if p.is_file()}


def test_harness_tiny_grid_then_cached_rerun_changes_nothing(tmp_path, monkeypatch):
    from benchmarks import common, run

    monkeypatch.setattr(run, "BOOTSTRAP_REPS", 200)  # a smoke test: fewer resamples
    monkeypatch.setattr(run, "CURVE_REPS", 50)
    argv = ["--envs", "CartPole-v1", "NoSuchEnv-v0", "--algos", "grpo", "ppo", "torchrl_grpo", "--seeds", "100"]
    argv += ["--budget", "1000", "--eval-every", "500", "--eval-episodes", "2", "--out", str(tmp_path)]
    assert run.main(argv) == 0
    for algo in ("grpo", "ppo", "torchrl_grpo"):
        rec = common.read_run(common.run_path(tmp_path / "benchmarks" / "grid", "CartPole-v1", algo, 100))
        assert rec.meta["budget"] == "1000" and rec.meta["seed"] == "100" and rec.meta["config"]
        assert rec.curve.steps[-1] >= 1000 and len(rec.curve.steps) >= 2
        assert all(1.0 <= m <= 500.0 for m in rec.curve.mean) and rec.curve.train_time[-1] > 0
    page = (tmp_path / "benchmarks.md").read_text()
    assert "![CartPole-v1](benchmarks/curve_CartPole-v1.png)" in page
    assert "NoSuchEnv-v0 `grpo`: zoo_configs/grpo.yml has no entry for NoSuchEnv-v0" in page  # skipped with a note
    assert "CartPole-v1: GRPO within PPO's CI: " in page and "P(algorithm > PPO)" in page
    for name in ("curve_CartPole-v1.png", "aggregate_iqm_mean.png", "performance_profile.png", "results.csv", "summary.md"):
        assert (tmp_path / "benchmarks" / name).is_file(), name
    before = _tree(tmp_path)

    def no_training(job):
        raise AssertionError(f"cached run trained again: {job}")

    monkeypatch.setattr(run, "execute", no_training)
    assert run.main(argv) == 0
    assert _tree(tmp_path) == before  # same files, same bytes, not even rewritten

    # a wider grid over the same cache: nothing to aggregate for the new algorithm, listed as missing
    assert run.main([*argv[:6], "reinforce", *argv[6:], "--report-only"]) == 0
    page = (tmp_path / "benchmarks.md").read_text()
    assert (
        "**Partial grid**: 3 of 4 cells complete (4 more skipped: no config), 3 runs" in page
        and "- CartPole-v1: `reinforce` (not run)" in page
    )


def test_vectorised_metrics_are_rliables():
    rliable_metrics = pytest.importorskip("rliable.metrics")
    import numpy as np

    from benchmarks import run

    rng = np.random.default_rng(0)
    for n in (1, 2, 3, 5, 8):
        x = rng.normal(size=(n, 3))
        assert run.iqm(x) == pytest.approx(rliable_metrics.aggregate_iqm(x))
        assert run.iqm(x, axis=0) == pytest.approx([rliable_metrics.aggregate_iqm(x[:, t]) for t in range(3)])
        a, b = rng.integers(0, 3, size=(n, 2)).astype(float), rng.integers(0, 3, size=(4, 2)).astype(float)  # with ties
        assert run.probability_of_improvement(a, b) == pytest.approx(rliable_metrics.probability_of_improvement(a, b))


@pytest.mark.parametrize("name", TORCHRL_ALGOS)
def test_pipeline_runs_and_curve_is_well_formed(name):
    budget, eval_every = 768, 256
    curve = run_torchrl(
        name, "CartPole-v1", seed=0, budget=budget, eval_every=eval_every, n_eval_episodes=2, hyperparams=SMALL.get(name)
    )
    assert len(curve.steps) == len(curve.mean) == len(curve.std) == len(curve.train_time) >= 1
    assert curve.steps == sorted(curve.steps) and len(set(curve.steps)) == len(curve.steps)
    assert curve.steps[-1] >= budget
    assert all(t2 >= t1 >= 0 for t1, t2 in zip([0.0, *curve.train_time], curve.train_time, strict=False))
    assert all(1.0 <= m <= 500.0 for m in curve.mean)  # CartPole returns of complete episodes
    assert all(s >= 0 for s in curve.std)


def test_stop_at_stops_at_first_evaluation():
    curve = run_torchrl(
        "torchrl_trpo",
        "CartPole-v1",
        seed=1,
        budget=100_000,
        eval_every=256,
        n_eval_episodes=2,
        stop_at=0.0,
        hyperparams=SMALL["torchrl_trpo"],
    )
    assert len(curve.steps) == 1 and curve.steps[0] <= 512


def test_evaluation_time_is_excluded(monkeypatch):
    original = torchrl_runner._Evaluator.__call__

    def slow(self, actor, obs_norm=None):
        time.sleep(0.4)
        return original(self, actor, obs_norm)

    monkeypatch.setattr(torchrl_runner._Evaluator, "__call__", slow)
    start = time.perf_counter()
    curve = run_torchrl(
        "torchrl_reinforce",
        "CartPole-v1",
        seed=0,
        budget=1024,
        eval_every=256,
        n_eval_episodes=2,
        hyperparams=SMALL["torchrl_reinforce"],
    )
    wall = time.perf_counter() - start
    assert len(curve.steps) == 4
    assert curve.train_time[-1] < wall - 4 * 0.4


def test_evaluator_counts_each_episode_once_deterministically():
    """Constant-action episodes on the evaluator's batched env have exactly the lengths of the same episodes run by hand."""
    n, seed = 3, 123
    evaluator = torchrl_runner._Evaluator("CartPole-v1", n, seed)

    class AlwaysLeft(torch.nn.Module):
        def forward(self, td: TensorDictBase) -> TensorDictBase:
            td.set("action", torch.zeros(td.shape, dtype=torch.int64))
            return td

    mean, std = evaluator(AlwaysLeft())
    evaluator.close()
    lengths = []
    for i in range(n):
        env = gym.make("CartPole-v1")
        env.reset(seed=seed + i)
        env.reset()
        steps, done = 0, False
        while not done:
            _, _, terminated, truncated, _ = env.step(0)
            steps, done = steps + 1, terminated or truncated
        lengths.append(float(steps))
    expected = torch.tensor(lengths, dtype=torch.float64)
    assert mean == pytest.approx(float(expected.mean()))
    assert std == pytest.approx(float(expected.std(unbiased=False)))


def test_evaluator_applies_the_training_observation_normalisation_frozen():
    """normalize_obs: the evaluation policy sees observations normalised by the training env's statistics, which the
    evaluation does not change."""
    from torchrl.envs import TransformedEnv

    train = TransformedEnv(
        torchrl_runner.make_batched_env("MountainCar-v0", 4, 0), torchrl_runner._load_examples_common().obs_normalization()
    )
    train.rollout(64, break_when_any_done=False)
    obs_norm = train.transform
    before = {k: v.clone() for k, v in obs_norm.state_dict()["_extra_state"].items()}
    seen = []

    class Recorder(torch.nn.Module):
        def forward(self, td: TensorDictBase) -> TensorDictBase:
            seen.append(td["observation"].clone())
            td.set("action", torch.zeros(td.shape, dtype=torch.int64))
            return td

    evaluator = torchrl_runner._Evaluator("MountainCar-v0", 2, 7)
    evaluator(Recorder(), obs_norm)
    raw = torchrl_runner.make_batched_env("MountainCar-v0", 2, 7).reset()["observation"]
    evaluator.close()
    assert not torch.allclose(seen[0], raw, atol=1e-2)  # normalised ...
    restored = obs_norm.denorm(TensorDict({"observation": seen[0]}, batch_size=[2]))["observation"]
    torch.testing.assert_close(restored, raw, atol=1e-4, rtol=1e-4)  # ... by the training statistics
    after = obs_norm.state_dict()["_extra_state"]
    assert all(torch.equal(after[k], v) for k, v in before.items())  # which the evaluation left alone


def test_gsde_pipeline_with_observation_normalisation_trains_the_statistics_it_evaluates_with():
    """A gSDE actor's noise is appended to the normalised env, not nested around it: TorchRL unwraps a nested
    TransformedEnv into copies of its transforms, and the pipeline's VecNorm then never saw a step (the evaluation
    returned NaN)."""
    hp = torchrl_runner.config_for("torchrl_trpo", "MountainCarContinuous-v0")
    hp.update(continuous="gsde", normalize_obs=True, frames_per_batch=256)
    torch.manual_seed(0)
    pipeline = torchrl_runner._TRPO("MountainCarContinuous-v0", 0, hp)
    before = {k: v.clone() for k, v in pipeline.obs_norm.state_dict()["_extra_state"].items()}
    pipeline.update(next(iter(pipeline.batches())), 0.0)
    after = pipeline.obs_norm.state_dict()["_extra_state"]
    assert any(not torch.equal(after[k], v) for k, v in before.items())  # the held VecNorm is the one that trains
    evaluator = torchrl_runner._Evaluator("MountainCarContinuous-v0", 2, 7)
    mean, _ = evaluator(pipeline.actor, pipeline.obs_norm)
    evaluator.close()
    assert math.isfinite(mean)


def test_evaluator_refuses_non_finite_returns():
    class NaNActions(torch.nn.Module):
        def forward(self, td: TensorDictBase) -> TensorDictBase:
            td.set("action", torch.full((*td.shape, 1), float("nan")))
            return td

    evaluator = torchrl_runner._Evaluator("Pendulum-v1", 2, 0)
    with pytest.raises(RuntimeError, match="not finite"):
        evaluator(NaNActions())
    evaluator.close()


def test_bad_names_are_rejected():
    with pytest.raises(ValueError, match="torchrl_grpo"):
        run_torchrl("torchrl_a3c", "CartPole-v1", 0, 100, 100)
    with pytest.raises(ValueError, match="learning_rate"):
        run_torchrl("torchrl_ppo", "CartPole-v1", 0, 100, 100, hyperparams={"learning_rate": 1e-3})


def test_tune_runs_each_candidate_once_and_resumes(tmp_path, capsys):
    from benchmarks import tune

    out = tmp_path / "tune.csv"
    argv = ["--algo", "reinforce", "--env", "CartPole-v1", "--budget", "600", "--seeds", "0", "1", "--out", str(out)]
    tune.main([*argv, "base={}", 'lr={"learning_rate": 0.01}'])
    rows = out.read_text().splitlines()
    assert len(rows) == 1 + 4 and rows[0].startswith("name,overrides,seed,final")
    assert '| lr | `{"learning_rate": 0.01}` |' in capsys.readouterr().out
    tune.main([*argv, "base={}"])  # cached: no new row
    assert len(out.read_text().splitlines()) == 5
    with pytest.raises(SystemExit):
        tune.main([*argv[:-5], "--seeds", "100", "--out", str(out), "base={}"])  # the grid's held-out seeds
    for bad in ("base", "base=[1]", "base={nope"):
        with pytest.raises(SystemExit):
            tune.main([*argv, bad])


@pytest.mark.parametrize("seeds", [["100"], ["0", "104"], ["250"]])
def test_tuning_tools_refuse_the_report_seeds(tmp_path, capsys, seeds):
    from benchmarks import ablation, tune

    with pytest.raises(SystemExit):
        ablation.main(["--envs", "CartPole-v1", "--variants", "grpo", "--seeds", *seeds, "--out", str(tmp_path / "a.csv")])
    assert "held out for the report" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        tune.main(["--algo", "grpo", "--env", "CartPole-v1", "--seeds", *seeds, "--out", str(tmp_path / "t.csv"), "b={}"])
    assert "held out for the report" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        torchrl_runner.main(["torchrl_grpo", "--seeds", *seeds])
    assert "held out for the report" in capsys.readouterr().err
    assert not (tmp_path / "a.csv").exists() and not (tmp_path / "t.csv").exists()


def test_branched_groups_start_from_the_trunk_state_and_count_every_step():
    """The branched-groups probe: every group starts from its trunk's state at the branch point (the whole Pendulum
    state, restored exactly), its members differ afterwards, and trunk steps count as env steps."""
    import numpy as np

    from benchmarks.probes import branched_groups as bg

    torch.manual_seed(0)
    policy = bg.Policy(0.0)
    trunks, g, every, length = 2, 3, 50, 20
    obs, act, logp, adv, steps = bg.collect_branched(policy, np.random.default_rng(0), g, trunks, 0.95, every, length)
    points = bg.VecPendulum.max_steps // every
    assert steps == trunks * bg.VecPendulum.max_steps + points * trunks * g * length
    assert len(obs) == len(act) == len(logp) == len(adv) == points * trunks * g * length
    block = trunks * g * length
    for p in range(points):
        first = obs[p * block : p * block + trunks * g].reshape(trunks, g, 3)
        assert np.allclose(first, first[:, :1])  # one start per group
        later = obs[p * block + (length - 1) * trunks * g : (p + 1) * block].reshape(trunks, g, 3)
        assert not np.allclose(later, later[:, :1])  # sampled actions separate the members
    grouped = adv.reshape(points, length, trunks, g)
    assert np.allclose(grouped.mean(axis=3), 0.0, atol=1e-6)  # advantage relative to the group's mean at each step
