"""Trains RL² (Duan et al. 2016) with PPO on bandits, random MDPs or a Gymnasium family; tests it with the baselines.

    python -m trainers.rl2 --env=bandit --num_arms=5 --num_pulls=10
    python -m trainers.rl2 --env=bandit --num_arms=10 --num_pulls=100
    python -m trainers.rl2 --env=mdp --num_episodes=10
    python -m trainers.rl2 --env=gym:MyEnv-v0 --gym_trial_steps=200

Every `--eval_every` steps the policy is scored on `--val_tasks` validation tasks
(seed 1; the baselines' tuning tasks) and the best one is kept in
`<workdir>/checkpoints/best` (`--select=best`, the default, tests it). The final test
plays RL² and every baseline on the SAME 1,000 test tasks (seed 0: those of
`evaluate_bandit_baselines` / `evaluate_mdp_baselines`) and prints one line per
policy: the total reward per trial, mean ± 95% CI, with the paper's figure. Training
tasks come from the stream of `--seed` (disjoint from both). A run resumes from its
workdir's latest checkpoint (same flags required); `--export_dir` exports the policy
step as a SavedModel (`tfmeta.export.rl2`).
"""

import dataclasses
import json
import pathlib
import time

from absl import app, flags

from tfmeta.learners.recurrent.rl2 import RL2Config
from tfmeta.training.preemption import PreemptedError
from trainers import common

common.define_thread_flags()
F = flags.FLAGS
_CONFIG_HELP = {
    "env": "bandit | mdp | gym:<id> (any registered Gymnasium environment; needs gymnasium).",
    "num_arms": "Bandits: arms k.",
    "num_pulls": "Bandits: pulls per trial n (the trial length; each pull is an episode).",
    "num_episodes": "MDPs: episodes per trial n (horizon 10 each).",
    "gym_trial_steps": "Gymnasium: environment steps per trial (episodes restart within a trial).",
    "units": "GRU units (the paper: 256).",
    "meta_batch_size": "Trials (tasks, vectorised environments) per PPO step.",
    "learning_rate": "Adam's learning rate.",
    "gamma": "Discount of GAE.",
    "lam": "GAE's lambda.",
    "clip": "PPO's clipping range.",
    "value_coef": "Weight of the value loss.",
    "entropy_coef": "Weight of the entropy bonus.",
    "epochs": "PPO epochs per rollout.",
    "minibatches": "Minibatches (of whole trials) per PPO epoch.",
    "max_grad_norm": "Clip of the gradients' global norm (0: none).",
    "seed": "Seed of the initialisation, the training task stream and the action draws.",
}
for _field in dataclasses.fields(RL2Config):
    _kind = {int: flags.DEFINE_integer, float: flags.DEFINE_float, str: flags.DEFINE_string}[_field.type]
    _kind(_field.name, _field.default, _CONFIG_HELP[_field.name])
flags.DEFINE_integer("num_iterations", 500, "PPO steps in total (also when resuming).")
flags.DEFINE_integer("eval_every", 50, "Steps between checkpoints and validation.")
flags.DEFINE_integer("val_tasks", 500, "Validation tasks (seed 1) for model selection.")
flags.DEFINE_integer("test_tasks", 1000, "Test tasks (seed 0, the same for every policy).")
flags.DEFINE_enum("select", "best", ["best", "last"], "Checkpoint the final test and export use.")
flags.DEFINE_string("workdir", None, "Run directory; default runs/rl2_<env>_<sizes>.")
flags.DEFINE_bool("resume", True, "Continue from the workdir's latest checkpoint (same flags required).")
flags.DEFINE_bool("baselines", True, "Also test the classical baselines (n=500 Gittins tables take ~30 s).")
flags.DEFINE_string("export_dir", "", "Root of SavedModel exports ('' to skip): <export_dir>/<export_name>/<version>.")
flags.DEFINE_string("export_name", None, "Name of the export; default the workdir's name.")

TEST_SEED, VAL_SEED = 0, 1


def setting_name(config) -> str:
    if config.env == "bandit":
        return f"bandit_k{config.num_arms}_n{config.num_pulls}"
    if config.env == "mdp":
        return f"mdp_n{config.num_episodes}"
    return f"gym_{config.env[4:]}_{config.gym_trial_steps}"


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    common.configure_threads()
    import keras  # noqa: PLC0415
    import tensorflow as tf  # noqa: PLC0415

    from tfmeta.learners.recurrent import rl2  # noqa: PLC0415
    from tfmeta.training.checkpoints import write_json_atomic  # noqa: PLC0415

    config = rl2.RL2Config(**{f.name: getattr(F, f.name) for f in dataclasses.fields(rl2.RL2Config)})
    for name in ("num_iterations", "eval_every", "val_tasks", "test_tasks"):
        if getattr(F, name) < 1:
            raise ValueError(f"`--{name}` must be a positive integer. Received: {name}={getattr(F, name)}")
    env, trial_steps = rl2.make_env(config.env, config.num_arms, config.num_pulls, config.num_episodes,
                                    config.gym_trial_steps)
    workdir = pathlib.Path(F.workdir or f"runs/rl2_{setting_name(config)}")
    keras.utils.set_random_seed(config.seed)
    learner = rl2.build_rl2(env=env, units=config.units, gamma=config.gamma, lam=config.lam, clip=config.clip,
                            value_coef=config.value_coef, entropy_coef=config.entropy_coef, epochs=config.epochs,
                            minibatches=config.minibatches, max_grad_norm=config.max_grad_norm)
    trainer = rl2.RL2Trainer(learner, env, trial_steps, config.meta_batch_size, config.learning_rate, config.seed,
                             workdir=workdir, config=config, resume=F.resume)
    start = int(trainer.step.numpy())
    print(f"RL² on {setting_name(config)}: {trial_steps} steps per trial, {config.meta_batch_size} trials per step, "
          f"{config.units} GRU units; workdir {workdir} (from step {start})", flush=True)

    val_params, val_seed = rl2.fixed_tasks(env, VAL_SEED, F.val_tasks)
    best_dir = workdir / "checkpoints" / "best"
    best_manager = tf.train.CheckpointManager(trainer.checkpoint, str(best_dir), max_to_keep=1)
    best_file = best_dir / "best.json"
    best = json.loads(best_file.read_text()) if best_file.is_file() else {}

    def validate():
        mean, ci = rl2.confidence_interval(trainer.evaluate(val_params, val_seed, action_seed=(VAL_SEED, 2)))
        if not best or mean > best["value"]:
            best.update(step=int(trainer.step.numpy()), metric="reward_per_trial", value=mean, ci95=ci)
            best_manager.save(checkpoint_number=best["step"])
            write_json_atomic(best_file, best)
        return {"reward": mean, "ci95": ci}

    started = time.time()
    trainer.train(F.num_iterations, F.eval_every, validate, log=lambda line: print(line, flush=True))
    if trainer.preempted:
        raise PreemptedError(f"Preempted (SIGTERM) at step {int(trainer.step.numpy())}; the checkpoint is saved: run "
                             f"the same command again to resume. Received: workdir={F.workdir!r}")
    print(f"trained {max(0, F.num_iterations - start)} steps in {time.time() - started:.0f} s", flush=True)

    if F.select == "best" and best:
        trainer.checkpoint.restore(tf.train.latest_checkpoint(str(best_dir))).expect_partial()
        print(f"testing the best validation checkpoint: step {best['step']} "
              f"(validation {best['value']:.2f} ± {best['ci95']:.2f})")
    test_params, test_seed = rl2.fixed_tasks(env, TEST_SEED, F.test_tasks)
    totals = trainer.evaluate(test_params, test_seed, action_seed=(TEST_SEED, 2))
    results = {"rl2": rl2.confidence_interval(totals)}
    if F.baselines:
        results.update(rl2.baseline_results(env, config, TEST_SEED, F.test_tasks, trial_steps))
    paper = rl2.paper_results(env, config)
    print(f"test: total reward per trial, mean ± 95% CI over {F.test_tasks} test tasks (the same for every policy)")
    for name, (mean, ci) in results.items():
        print(rl2.format_policy_line(name, mean, ci, paper.get(name)))
    write_json_atomic(workdir / "test.json", {name: {"mean": m, "ci95": c} for name, (m, c) in results.items()})

    if F.export_dir:
        from tfmeta.export.rl2 import export_rl2_policy  # noqa: PLC0415

        card = {"training": dataclasses.asdict(config), "evaluation": {
            name: {"mean": m, "ci95": c} for name, (m, c) in results.items()}}
        path = export_rl2_policy(learner, F.export_dir, F.export_name or workdir.name, model_card=card)
        print(f"exported the policy step to {path}")


if __name__ == "__main__":
    common.main(main)
