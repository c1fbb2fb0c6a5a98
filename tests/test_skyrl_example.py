"""examples/skyrl/: the recipe as far as SkyRL runs without Ray and GPUs: the dataset script, the entrypoint's
registrations (estimator in the driver at import, env in the entrypoint) and SkyRL's own config parsing and
validate_cfg on the launch script's overrides. BasePPOExp(cfg).run() (Ray, vLLM, FSDP on GPUs) is not run here."""

import json
import shlex

import pytest

from search_env.data import load_questions
from search_env.integrations import skyrl as adapter
from tests.scripts import ROOT, imported

RECIPE = ROOT / "examples" / "skyrl"


def launch_overrides(data_dir: str) -> list[str]:
    """The overrides run_search.sh passes to main_search.py, with $DATA_DIR filled in."""
    text = (RECIPE / "run_search.sh").read_text().replace("\\\n", " ")
    line = next(li for li in text.splitlines() if "examples/skyrl/main_search.py" in li and not li.startswith("#"))
    argv = shlex.split(line.replace("$DATA_DIR", data_dir))
    return [a for a in argv[2:] if a != "$@"]


def test_prepare_data_writes_a_fixed_split(tmp_path):
    pandas = pytest.importorskip("pandas")
    with imported("examples/skyrl/prepare_data.py") as script:
        counts = script.main(["--output-dir", str(tmp_path), "--validation-size", "5"])
    train, validation = (pandas.read_parquet(tmp_path / f"{n}.parquet") for n in ("train", "validation"))
    assert counts == {"train": len(train), "validation": 5} and len(validation) == 5
    assert len(train) + 5 == len(load_questions(None)) and set(train["env_class"]) == {"search_env"}
    ids = {r["question_id"] for r in train["extra_info"]} | {r["question_id"] for r in validation["extra_info"]}
    assert len(ids) == len(load_questions(None))  # train and validation are disjoint


def test_entrypoint_registers_and_skyrl_validates_the_launch_script(tmp_path, monkeypatch):
    from tests.test_skyrl import _cpu_import_shims, skyrl_release

    sky = skyrl_release("skyrl")
    skyrl_gym = pytest.importorskip("skyrl_gym")
    registry = sky.ppo_utils.AdvantageEstimatorRegistry
    if "search_env_ig" in registry.list_available():
        registry.unregister("search_env_ig")
    monkeypatch.setenv(adapter.SETTINGS_VARIABLE, "")  # empty: the entrypoint's defaults; register_env's is undone
    with _cpu_import_shims(), imported("examples/skyrl/main_search.py") as entry:
        assert "search_env_ig" in registry.list_available()  # registered at import, in the driver
        cfg = entry.SkyRLTrainConfig.from_cli_overrides(launch_overrides(str(tmp_path)))
        entry.validate_cfg(cfg)
        assert json.loads(entry.SETTINGS) == {"retriever": "bm25", "ig_weight": 0.3}
        entry.register_env(json.dumps({"ig": False, "topk": 1}))  # what the Ray entrypoint does first
    algorithm = cfg.trainer.algorithm
    assert algorithm.advantage_estimator == "search_env_ig" and not algorithm.use_kl_in_reward
    assert cfg.environment.env_class == "search_env" and not cfg.generator.step_wise_trajectories
    assert cfg.data.train_data == [f"{tmp_path}/train.parquet"]
    row = adapter.dataset_rows(limit=1)[0]
    env = skyrl_gym.make("search_env", env_config={}, extras={k: v for k, v in row.items() if k != "prompt"})
    assert env.env.topk == 1 and env.env.ig is None  # the settings the entrypoint set reached the env
    registry.unregister("search_env_ig")
