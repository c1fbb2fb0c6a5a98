#!/usr/bin/env bash
# GRPO with IG credit on search turns, in SkyRL 0.4 (its configuration is these command-line overrides). On a GPU
# machine, from the project root: pip install "search_env[skyrl]" "skyrl[fsdp]==0.4.0"; then
#   python examples/skyrl/prepare_data.py --output-dir data/search_env
#   SEARCH_ENV_SKYRL='{"ig_weight": 0.3}' bash examples/skyrl/run_search.sh [more overrides]
# The estimator needs use_kl_in_reward=false (a KL term on every token would hide where turns end) and
# per-trajectory rows (step_wise_trajectories=false, the default).
set -euo pipefail
DATA_DIR=${DATA_DIR:-data/search_env}

python examples/skyrl/main_search.py \
  data.train_data="['$DATA_DIR/train.parquet']" \
  data.val_data="['$DATA_DIR/validation.parquet']" \
  environment.env_class=search_env \
  trainer.algorithm.advantage_estimator=search_env_ig \
  trainer.algorithm.use_kl_in_reward=false \
  generator.step_wise_trajectories=false \
  generator.max_turns=4 \
  generator.use_conversation_multi_turn=true \
  generator.n_samples_per_prompt=8 \
  trainer.train_batch_size=64 \
  trainer.policy_mini_batch_size=64 \
  trainer.policy.model.path=Qwen/Qwen2.5-3B-Instruct \
  trainer.logger=console \
  "$@"
