"""The name verifiers (>= 0.4) loads search_env by: ``vf-eval search_env_verifiers`` imports this module and takes
its ``Taskset`` and ``Env`` subclasses; everything lives in :mod:`search_env.integrations.verifiers`."""

from search_env.integrations.verifiers import (
    SearchQAConfig,
    SearchQAData,
    SearchQAEnvConfig,
    SearchQATask,
    SearchQATaskset,
    SearchQAVerifiersEnv,
    load_environment,
)

__all__ = ["SearchQAConfig", "SearchQAData", "SearchQAEnvConfig", "SearchQATask", "SearchQATaskset",
           "SearchQAVerifiersEnv", "load_environment"]
