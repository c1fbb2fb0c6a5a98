"""SkyRL's entrypoint with search_env's env and IG advantage estimator, laid out like SkyRL's custom-estimator
example (``examples/algorithms/custom_advantage_estimator/main_custom_adv_est.py``); ``run_search.sh`` launches it.

- The estimator is registered here, in the driver, at import: ``validate_cfg`` checks its name, and
  ``initialize_ray`` copies the registry to SkyRL's registry actor, from which the trainer reads it.
- The env (``environment.env_class=search_env``) is registered inside the Ray entrypoint, the process whose
  generator makes the envs; search_env's settings (JSON, or a JSON file, in ``$SEARCH_ENV_SKYRL``; see
  ``search_env.integrations.skyrl.DEFAULTS``) are read in the driver and travel with the entrypoint function, since
  SkyRL's Ray workers do not see the driver's environment.

Needs ``pip install "search_env[skyrl]" "skyrl[fsdp]==0.4.0"`` (Python >= 3.12) and a GPU.
"""

import json
import os
import sys

import ray
from skyrl.train.config import SkyRLTrainConfig
from skyrl.train.entrypoints.main_base import BasePPOExp, validate_cfg
from skyrl.train.utils import initialize_ray

from search_env.integrations import skyrl

SETTINGS = os.environ.get(skyrl.SETTINGS_VARIABLE) or json.dumps({"retriever": "bm25", "ig_weight": 0.3})
skyrl.register_advantage_estimator("search_env_ig")  # in the driver, before validate_cfg checks the name


def register_env(settings: str = SETTINGS) -> None:
    """In the process that makes the envs: search_env's settings, then its ``skyrl_gym`` registration."""
    os.environ[skyrl.SETTINGS_VARIABLE] = settings
    skyrl.register()


@ray.remote(num_cpus=1)
def skyrl_entrypoint(cfg: SkyRLTrainConfig):
    register_env()
    BasePPOExp(cfg).run()


def main() -> None:
    cfg = SkyRLTrainConfig.from_cli_overrides(sys.argv[1:])
    validate_cfg(cfg)
    initialize_ray(cfg)
    ray.get(skyrl_entrypoint.remote(cfg))


if __name__ == "__main__":
    main()
