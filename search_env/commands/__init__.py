"""The ``search-env`` command (:mod:`~search_env.commands.cli`) and its subcommands' front ends: the demo, ``eval
--compare``, ``view``. What they share with library code lives in the library: DIG labels in
:mod:`search_env.info_gain.dig`, the resumable JSONL files in :mod:`search_env.data.jsonl`, argument parsing in
:mod:`search_env.arguments`. No library module imports :mod:`search_env.commands`."""
